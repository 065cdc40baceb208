//! The bridge between the XMPP task and the sans-IO session machine: IQs in,
//! IQs out, timers, events.

use std::time::Instant;

use minidom::Element;
use minidom::rxml::xml_ncname;
use tokio::sync::mpsc;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Message;
use tracing::{debug, warn};

use crate::session::{IqIn, SessionEvent, SessionHandle, SessionManager};
use crate::xmpp::{Incoming, Xmpp, XmppError};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};

/// What the signalling has to say.
#[derive(Debug)]
pub enum Signal {
    Session(SessionEvent),
    /// The peer of this session went offline (unavailable presence): its
    /// process or its connection died.
    PeerOffline(SessionHandle),
    /// The XMPP connection is gone. Channels may still be running.
    Lost(XmppError),
    /// A message (the receiver looks for file links in it).
    Message(Box<Message>),
    /// An IQ the Google session layer does not take (Jingle, IBB, and the
    /// answers to their requests).
    Iq(IqIn),
}

/// Owns the session machine and feeds it from the XMPP connection.
pub struct Signalling {
    pub xmpp: Xmpp,
    incoming: mpsc::Receiver<Incoming>,
    pub machine: SessionManager,
    lost: bool,
}

impl Signalling {
    pub fn new(xmpp: Xmpp, incoming: mpsc::Receiver<Incoming>, machine: SessionManager) -> Self {
        Self {
            xmpp,
            incoming,
            machine,
            lost: false,
        }
    }

    /// Sends every IQ the machine has queued.
    pub async fn flush(&mut self) {
        while let Some(out) = self.machine.poll_transmit() {
            let el = out.to_element(None);
            match Iq::try_from(el) {
                Ok(iq) => {
                    if let Err(e) = self.xmpp.send(iq).await {
                        debug!(%e, "could not send a session IQ");
                    }
                }
                Err(e) => warn!(%e, "the session layer produced an IQ that does not parse"),
            }
        }
    }

    /// Waits for the next session event, driving timers and incoming stanzas.
    pub async fn next(&mut self) -> Signal {
        loop {
            self.flush().await;
            if let Some(ev) = self.machine.poll_event() {
                return Signal::Session(ev);
            }
            let deadline = self.machine.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                inc = self.incoming.recv(), if !self.lost => match inc {
                    Some(Incoming::Iq(iq)) => {
                        if let Some(other) = self.feed(*iq) {
                            return Signal::Iq(other);
                        }
                    }
                    Some(Incoming::Presence(p)) => {
                        if let Some(h) = self.offline_peer(&p) {
                            return Signal::PeerOffline(h);
                        }
                    }
                    Some(Incoming::Message(m)) => return Signal::Message(m),
                    Some(Incoming::Disconnected(e)) => {
                        self.lost = true;
                        return Signal::Lost(e);
                    }
                    None => {
                        self.lost = true;
                        return Signal::Lost(XmppError::Disconnected("the XMPP task stopped".into()));
                    }
                },
                _ = sleep => self.machine.handle_timeout(Instant::now()),
            }
        }
    }

    /// A session whose peer this unavailable presence comes from.
    fn offline_peer(&self, p: &Presence) -> Option<SessionHandle> {
        if p.type_ != PresenceType::Unavailable {
            return None;
        }
        let from = p.from.as_ref()?;
        self.machine
            .handles()
            .into_iter()
            .find(|h| self.machine.info(*h).is_some_and(|i| &i.peer == from))
    }

    /// Whether the XMPP connection is gone.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Hands an IQ to the session machine; returns it if not taken.
    fn feed(&mut self, iq: Iq) -> Option<IqIn> {
        let mut el = Element::from(iq);
        if el.attr("from").is_none() {
            // Our own server speaks without `from`: it is our account.
            let own = self.xmpp.jid().to_bare().to_string();
            el.set_attr(
                minidom::rxml::Namespace::NONE,
                xml_ncname!("from").into(),
                own,
            );
        }
        match IqIn::from_element(&el) {
            Some(iq) => {
                if self.machine.handle_iq(Instant::now(), iq.clone()) {
                    None
                } else {
                    Some(iq)
                }
            }
            None => {
                debug!("IQ without id or type");
                None
            }
        }
    }
}
