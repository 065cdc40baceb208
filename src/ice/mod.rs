//! Google p2p transport: candidates, the RFC 3489 STUN codec, the legacy
//! Google ICE dialect (a sans-IO agent) and a tokio UDP driver.
//!
//! All of it is hand-written: no crate speaks this dialect. webrtc-ice and
//! str0m implement RFC 8445 and require MESSAGE-INTEGRITY, FINGERPRINT and
//! controlling/controlled roles, and every STUN codec requires the RFC 5389
//! magic cookie, whereas Google's dialect (libjingle 0.4, libnice
//! `NICE_COMPATIBILITY_GOOGLE`) uses 16-byte random transaction ids, per-
//! candidate usernames concatenated remote‖local, and no integrity at all
//! (docs/protocol.md §B, docs/crates.md §4).
pub mod agent;
mod candidate;
pub mod driver;
pub mod stun;

pub use agent::{AddRemote, IceAgent, IceConfig, IceEvent, Received, Transmit};
pub use candidate::{Candidate, CandidateType, random_fragment};
pub use driver::{GatherConfig, IceChannel, TurnServer};
