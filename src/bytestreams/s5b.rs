//! XEP-0260 candidate negotiation, sans-IO: which candidate carries the
//! data once both sides reported `candidate-used` or `candidate-error`,
//! and who must activate a proxy.
//!
//! Rules (XEP-0260 §2.4–§2.5): each side tries the *peer's* candidates in
//! priority order and reports the first that works (`candidate-used`) or
//! none (`candidate-error`). With both reports in: both errors → fall back
//! (the initiator sends `transport-replace` to IBB); one error → the other
//! side's choice; both used → the candidate with the higher priority (in
//! the list it came from), and on equal priority the initiator's choice.
//! If the chosen candidate is a proxy, the party that *offered* it connects
//! to the proxy, activates the stream and sends `<activated/>`.
//!
//! The driver connects ([`connect_first`]) and feeds the results in;
//! [`S5bNegotiation::outcome`] says which stream to keep.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tracing::debug;

use super::socks5::{self, Socks5Error};
use crate::jingle::{Candidate, CandidateType, S5bPayload};

/// XEP-0260 §2.2 priority for a candidate: `(type preference << 16) +
/// local preference`. Direct candidates of Libervia use 10000 as local
/// preference (Libervia 0.9, see tests/jingle_libervia.rs); we do the same.
pub fn priority(kind: CandidateType, local_pref: u16) -> u32 {
    (kind.preference() << 16) + u32::from(local_pref)
}

/// The local preference we give direct candidates.
pub const DIRECT_LOCAL_PREF: u16 = 10000;

/// Longest wait, from [`S5bNegotiation::start`], for both reports: each
/// side tries every candidate with a bounded handshake
/// (`socks5::HANDSHAKE_TIMEOUT` each, at most `MAX_CANDIDATES` of them), so
/// a peer silent this long is treated as `candidate-error` and the
/// negotiation falls back (or takes our own choice).
pub const NEGOTIATION_TIMEOUT: Duration = Duration::from_secs(60);

/// What a side reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Connected to the other side's candidate with this cid.
    Used(String),
    /// Connected to none.
    Error,
}

/// The negotiated result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Use our outgoing connection to the peer's candidate `cid`.
    UseOutgoing {
        /// The peer's candidate.
        candidate: Candidate,
    },
    /// Use the connection the peer made to our candidate `cid` (for a
    /// proxy candidate of ours: we connect to the proxy and activate).
    UseIncoming {
        /// Our candidate.
        candidate: Candidate,
    },
    /// No candidate works: fall back (IBB).
    Fallback,
}

impl Outcome {
    /// True if we must connect to the proxy and activate it (our own
    /// proxy candidate was chosen).
    pub fn we_activate(&self) -> bool {
        matches!(self, Outcome::UseIncoming { candidate } if candidate.kind == CandidateType::Proxy)
    }
}

/// One content's S5B negotiation.
#[derive(Debug, Clone)]
pub struct S5bNegotiation {
    initiator: bool,
    local: Vec<Candidate>,
    remote: Vec<Candidate>,
    ours: Option<Report>,
    theirs: Option<Report>,
    deadline: Option<Instant>,
}

impl S5bNegotiation {
    /// `initiator`: our Jingle role; `local`: the candidates we offered.
    pub fn new(initiator: bool, local: Vec<Candidate>) -> Self {
        S5bNegotiation {
            initiator,
            local,
            remote: Vec::new(),
            ours: None,
            theirs: None,
            deadline: None,
        }
    }

    /// Starts the [`NEGOTIATION_TIMEOUT`] clock (when the transports were
    /// exchanged: at accept).
    pub fn start(&mut self, now: Instant) {
        self.deadline = Some(now + NEGOTIATION_TIMEOUT);
    }

    /// When [`S5bNegotiation::handle_timeout`] must run, while undecided.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ours.is_some() && self.theirs.is_some() {
            None
        } else {
            self.deadline
        }
    }

    /// Past the deadline, a missing report counts as an error, so that
    /// [`S5bNegotiation::outcome`] decides. Returns true if it changed
    /// anything (the driver then sends our `candidate-error` if ours was
    /// missing).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        if self.deadline.is_none_or(|d| d > now) {
            return false;
        }
        let mut changed = false;
        for r in [&mut self.ours, &mut self.theirs] {
            if r.is_none() {
                *r = Some(Report::Error);
                changed = true;
            }
        }
        changed
    }

    /// The peer's candidates arrived (offer, accept or transport-info).
    pub fn set_remote(&mut self, remote: Vec<Candidate>) {
        self.remote = remote;
    }

    /// The peer's candidates, best first: the order to try them in.
    pub fn connect_order(&self) -> Vec<Candidate> {
        let mut v = self.remote.clone();
        v.sort_by_key(|c| std::cmp::Reverse(c.priority));
        v
    }

    /// Our own report (what we send as transport-info).
    pub fn local_result(&mut self, report: Report) -> S5bPayload {
        let p = match &report {
            Report::Used(cid) => S5bPayload::CandidateUsed(cid.clone()),
            Report::Error => S5bPayload::CandidateError,
        };
        self.ours = Some(report);
        p
    }

    /// The peer's `transport-info` payload. Returns false if it names a
    /// candidate we did not offer (then treated as an error report).
    pub fn remote_payload(&mut self, payload: &S5bPayload) -> bool {
        match payload {
            S5bPayload::CandidateUsed(cid) => {
                if self.local.iter().any(|c| &c.cid == cid) {
                    self.theirs = Some(Report::Used(cid.clone()));
                    true
                } else {
                    debug!("peer used a candidate we never offered");
                    self.theirs = Some(Report::Error);
                    false
                }
            }
            S5bPayload::CandidateError => {
                self.theirs = Some(Report::Error);
                true
            }
            S5bPayload::Candidates(c) => {
                self.set_remote(c.clone());
                true
            }
            S5bPayload::Activated(_) | S5bPayload::ProxyError => true,
        }
    }

    /// The decision, once both reports are in.
    pub fn outcome(&self) -> Option<Outcome> {
        let (ours, theirs) = (self.ours.as_ref()?, self.theirs.as_ref()?);
        let remote = |cid: &str| self.remote.iter().find(|c| c.cid == cid).cloned();
        let local = |cid: &str| self.local.iter().find(|c| c.cid == cid).cloned();
        Some(match (ours, theirs) {
            (Report::Error, Report::Error) => Outcome::Fallback,
            (Report::Used(o), Report::Error) => remote(o).map_or(Outcome::Fallback, |candidate| {
                Outcome::UseOutgoing { candidate }
            }),
            (Report::Error, Report::Used(t)) => local(t).map_or(Outcome::Fallback, |candidate| {
                Outcome::UseIncoming { candidate }
            }),
            (Report::Used(o), Report::Used(t)) => {
                let (Some(out), Some(inc)) = (remote(o), local(t)) else {
                    return Some(Outcome::Fallback);
                };
                let outgoing_wins = match out.priority.cmp(&inc.priority) {
                    std::cmp::Ordering::Greater => true,
                    std::cmp::Ordering::Less => false,
                    // Equal: the initiator's choice wins; the initiator's
                    // choice is the candidate it connected to.
                    std::cmp::Ordering::Equal => self.initiator,
                };
                if outgoing_wins {
                    Outcome::UseOutgoing { candidate: out }
                } else {
                    Outcome::UseIncoming { candidate: inc }
                }
            }
        })
    }
}

/// A candidate's socket address, if its host is an IP literal (host names
/// are not resolved here: XEP-0260 peers send addresses).
pub fn candidate_addr(c: &Candidate) -> Option<SocketAddr> {
    c.host
        .parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, c.port))
}

/// Tries `candidates` in order (each bounded by
/// [`socks5::HANDSHAKE_TIMEOUT`]) and returns the first that completes the
/// SOCKS5 handshake for `dst`, or `None`.
pub async fn connect_first(
    candidates: &[Candidate],
    dst: &str,
) -> Option<(Candidate, tokio::net::TcpStream)> {
    for c in candidates {
        let Some(addr) = candidate_addr(c) else {
            continue;
        };
        match socks5::connect(addr, dst).await {
            Ok(s) => return Some((c.clone(), s)),
            Err(
                e @ (Socks5Error::Io(_)
                | Socks5Error::Timeout
                | Socks5Error::Protocol
                | Socks5Error::Refused(_)),
            ) => {
                debug!("S5B candidate {} at {addr}: {e}", c.cid)
            }
            Err(e) => debug!("S5B candidate {}: {e}", c.cid),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(cid: &str, kind: CandidateType, pref: u16) -> Candidate {
        Candidate {
            cid: cid.into(),
            host: "127.0.0.1".into(),
            jid: jid::Jid::new("a@b/c").unwrap(),
            port: 1,
            priority: priority(kind, pref),
            kind,
        }
    }

    #[test]
    fn silent_peer_times_out_into_our_choice() {
        let now = Instant::now();
        let mut n = S5bNegotiation::new(true, vec![cand("l1", CandidateType::Direct, 1)]);
        n.set_remote(vec![cand("r1", CandidateType::Direct, 1)]);
        n.start(now);
        n.local_result(Report::Used("r1".into()));
        assert_eq!(n.poll_timeout(), Some(now + NEGOTIATION_TIMEOUT));
        assert!(!n.handle_timeout(now + NEGOTIATION_TIMEOUT - Duration::from_millis(1)));
        assert_eq!(n.outcome(), None);
        assert!(n.handle_timeout(now + NEGOTIATION_TIMEOUT));
        assert!(
            matches!(n.outcome(), Some(Outcome::UseOutgoing { candidate }) if candidate.cid == "r1")
        );
        assert_eq!(n.poll_timeout(), None);
    }

    #[test]
    fn both_errors_fall_back() {
        let mut n = S5bNegotiation::new(true, vec![cand("l1", CandidateType::Direct, 1)]);
        n.set_remote(vec![cand("r1", CandidateType::Direct, 1)]);
        assert_eq!(n.outcome(), None);
        n.local_result(Report::Error);
        assert_eq!(n.outcome(), None);
        n.remote_payload(&S5bPayload::CandidateError);
        assert_eq!(n.outcome(), Some(Outcome::Fallback));
    }

    #[test]
    fn higher_priority_wins_and_ties_go_to_initiator() {
        for initiator in [true, false] {
            let mut n = S5bNegotiation::new(initiator, vec![cand("l1", CandidateType::Proxy, 0)]);
            n.set_remote(vec![cand("r1", CandidateType::Direct, 0)]);
            n.local_result(Report::Used("r1".into()));
            n.remote_payload(&S5bPayload::CandidateUsed("l1".into()));
            assert!(
                matches!(n.outcome(), Some(Outcome::UseOutgoing { candidate }) if candidate.cid == "r1")
            );
            // Equal priorities: the initiator's choice (the candidate it
            // connected to) wins on both sides.
            let mut n = S5bNegotiation::new(initiator, vec![cand("l1", CandidateType::Direct, 5)]);
            n.set_remote(vec![cand("r1", CandidateType::Direct, 5)]);
            n.local_result(Report::Used("r1".into()));
            n.remote_payload(&S5bPayload::CandidateUsed("l1".into()));
            let o = n.outcome().unwrap();
            if initiator {
                assert!(matches!(o, Outcome::UseOutgoing { .. }));
            } else {
                assert!(matches!(o, Outcome::UseIncoming { .. }));
            }
        }
    }

    #[test]
    fn one_error_takes_the_other_choice_and_proxy_activation() {
        let mut n = S5bNegotiation::new(false, vec![cand("p1", CandidateType::Proxy, 0)]);
        n.set_remote(vec![cand("r1", CandidateType::Direct, 0)]);
        n.local_result(Report::Error);
        n.remote_payload(&S5bPayload::CandidateUsed("p1".into()));
        let o = n.outcome().unwrap();
        assert!(o.we_activate());
        // A cid we never offered counts as an error.
        let mut n = S5bNegotiation::new(false, vec![cand("p1", CandidateType::Proxy, 0)]);
        n.local_result(Report::Error);
        assert!(!n.remote_payload(&S5bPayload::CandidateUsed("zz".into())));
        assert_eq!(n.outcome(), Some(Outcome::Fallback));
    }
}
