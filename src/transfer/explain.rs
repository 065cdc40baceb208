//! Sentences for how a session ended. Users read these; the Rust debug
//! forms of [`TerminateReason`] and [`TimeoutKind`] appear only in `-v`
//! logs (the callers log them at debug level).

use crate::session::{Action, TerminateReason, TimeoutKind};

/// The message of ours that `action` names, in words.
fn message(action: Action) -> String {
    match action {
        Action::Initiate => "offer".into(),
        Action::Accept => "acceptance".into(),
        Action::TransportAccept => "transport".into(),
        Action::TransportInfo | Action::Candidates => "network addresses".into(),
        Action::Info => "progress information".into(),
        other => format!("{} message", other.as_str()),
    }
}

/// Which timer ran out, as a sentence without a capital or full stop.
pub fn timeout(kind: &TimeoutKind) -> String {
    match kind {
        TimeoutKind::NoReply(action) => format!(
            "the peer's client did not answer our {} in time",
            message(*action)
        ),
        TimeoutKind::NoAccept => "the offer was neither accepted nor declined in time".into(),
        TimeoutKind::NoDecision => {
            "the offer was neither accepted nor declined here in time".into()
        }
        TimeoutKind::NoTransport => "no working network path was found in time".into(),
    }
}

/// Why a session ended, as a sentence without a capital or full stop.
pub fn reason(reason: &TerminateReason) -> String {
    match reason {
        TerminateReason::LocalTerminate => "we ended the session".into(),
        TerminateReason::LocalReject => "we declined the offer".into(),
        TerminateReason::Completed => "the transfer completed".into(),
        TerminateReason::Declined { .. } => "the peer declined the offer".into(),
        TerminateReason::PeerTerminated { reasons } if reasons.is_empty() => {
            "the peer ended the session".into()
        }
        TerminateReason::PeerTerminated { reasons } => {
            format!("the peer ended the session ({})", reasons.join(", "))
        }
        TerminateReason::Redirected => {
            "the peer redirected the session, which gshare does not support".into()
        }
        TerminateReason::PeerError {
            action,
            condition,
            text,
            ..
        } => refused(*action, condition.as_str(), text.as_deref()),
        TerminateReason::Timeout(kind) => format!("the session timed out: {}", timeout(kind)),
    }
}

/// "the peer's client refused our transport: feature-not-implemented".
fn refused(action: Action, condition: &str, text: Option<&str>) -> String {
    let mut s = format!(
        "the peer's client refused our {}: {condition}",
        message(action)
    );
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        s.push_str(&format!(" ({t})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Condition, ErrorType};

    fn is_sentence(s: &str) {
        assert!(!s.contains('{') && !s.contains("Some("), "{s}");
        assert!(!s.is_empty());
    }

    #[test]
    fn every_reason_reads_as_a_sentence() {
        let reasons = [
            TerminateReason::LocalTerminate,
            TerminateReason::LocalReject,
            TerminateReason::Completed,
            TerminateReason::Declined { reject: true },
            TerminateReason::PeerTerminated { reasons: vec![] },
            TerminateReason::PeerTerminated {
                reasons: vec!["cancel".into()],
            },
            TerminateReason::Redirected,
            TerminateReason::PeerError {
                action: Action::TransportAccept,
                error_type: ErrorType::Cancel,
                condition: Condition::FeatureNotImplemented,
                text: Some("no".into()),
            },
            TerminateReason::Timeout(TimeoutKind::NoReply(Action::Initiate)),
            TerminateReason::Timeout(TimeoutKind::NoAccept),
            TerminateReason::Timeout(TimeoutKind::NoDecision),
            TerminateReason::Timeout(TimeoutKind::NoTransport),
        ];
        for r in &reasons {
            is_sentence(&reason(r));
        }
        assert_eq!(
            reason(&reasons[7]),
            "the peer's client refused our transport: feature-not-implemented (no)"
        );
    }
}
