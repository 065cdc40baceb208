//! gshare: the Google Talk file-share protocol, layer by layer.
//!
//! Data path, bottom up: UDP socket → [`ice`] (STUN or data?) → `pseudotcp`
//! → `http` → [`transfer`] → disk. Signalling: [`xmpp`] → `session`.
//! [`cli`] describes the command line; [`config`] merges it with the config
//! file.

pub mod cli;
pub mod config;
pub mod http;
pub mod ice;
pub mod pseudotcp;
pub mod session;
pub mod transfer;
pub mod upload;
pub mod xmpp;
