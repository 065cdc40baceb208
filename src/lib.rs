//! gshare: the Google Talk file-share protocol, layer by layer.
//!
//! Data path, bottom up: UDP socket → [`ice`] (STUN or data?) → `pseudotcp`
//! → `http` → [`transfer`] → disk. Signalling: [`xmpp`] → `session`.
//! [`config`] merges account flags with the config file. The command line
//! itself lives in the binary (`src/cli.rs`): the library takes plain option
//! types ([`transfer::SendOptions`], [`transfer::ReceiveOptions`]).

pub mod bytestreams;
pub mod config;
pub mod http;
pub mod ice;
pub mod jingle;
pub mod net;
pub mod pseudotcp;
pub mod rng;
pub mod secure;
pub mod session;
pub mod transfer;
pub mod turn;
pub mod upload;
pub mod xmpp;
