//! The Google p2p candidate: what one side tells the other about a UDP
//! address it can be reached on (docs/protocol.md §B.1).
//!
//! This is plain data shared by the session layer (which carries candidates in
//! `transport-info` / legacy `candidates` messages) and the ICE agent (which
//! checks them). Parsing from and writing to XML lives in the session layer.

use std::fmt;
use std::net::SocketAddr;

/// Candidate type as written in the `type` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CandidateType {
    /// A host address (`local`; the seed's `host` is read as this too).
    Local,
    /// A server-reflexive address learned from a STUN server (`stun`).
    Stun,
    /// An address on a relay server (`relay`).
    Relay,
}

impl CandidateType {
    /// The wire spelling real implementations send.
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateType::Local => "local",
            CandidateType::Stun => "stun",
            CandidateType::Relay => "relay",
        }
    }

    /// Parses the wire spelling; `host` (the seed's spelling) means `local`,
    /// and the ICE names `srflx`/`prflx` are read as `stun`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" | "host" => Some(CandidateType::Local),
            "stun" | "srflx" | "prflx" => Some(CandidateType::Stun),
            "relay" => Some(CandidateType::Relay),
            _ => None,
        }
    }

    /// The preference libjingle gives this type (LJ04 basicportallocator).
    pub fn default_preference(self) -> f32 {
        match self {
            CandidateType::Local => 1.0,
            CandidateType::Stun => 0.9,
            CandidateType::Relay => 0.5,
        }
    }
}

impl fmt::Display for CandidateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One candidate with all ten attributes of the wire form.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Transport channel name (`private-1`, `gabble-1`, …).
    pub name: String,
    /// Address and port.
    pub address: SocketAddr,
    /// Per-candidate username fragment: 16 characters of the base64 alphabet
    /// for candidates we make; whatever the peer sent for theirs.
    pub username: String,
    /// Per-candidate password; never used on the wire by any check.
    pub password: String,
    /// Preference in [0, 1] (`1` local, `0.9` stun, `0.5` relay); peers send
    /// odd values, so this is never validated beyond being a number.
    pub preference: f32,
    /// `udp`, `tcp` or `ssltcp`; gshare only makes and checks `udp`.
    pub protocol: String,
    /// `local`, `stun` or `relay`.
    pub kind: CandidateType,
    /// Newer generations replace older ones.
    pub generation: u32,
    /// LJ04: interface name; GAB: always `0`. We send `0`.
    pub network: String,
}

impl Candidate {
    /// True if both describe the same remote endpoint with the same
    /// credentials (LJ04 `Candidate::IsEquivalent`): a duplicate to ignore.
    pub fn is_equivalent(&self, other: &Candidate) -> bool {
        self.name == other.name
            && self.protocol == other.protocol
            && self.address == other.address
            && self.username == other.username
            && self.password == other.password
            && self.generation == other.generation
    }
}

/// The base64 alphabet libjingle draws username fragments from (§B.1).
const FRAGMENT_ALPHABET: &[u8; 64] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A random 16-character fragment over the base64 alphabet, as libjingle 0.4
/// and libnice in Google mode make for every candidate's username and
/// password.
pub fn random_fragment<R: rand::Rng + ?Sized>(rng: &mut R) -> String {
    (0..16)
        .map(|_| char::from(FRAGMENT_ALPHABET[rng.random_range(0..FRAGMENT_ALPHABET.len())]))
        .collect()
}

impl Candidate {
    /// A candidate of ours: fresh random username and password, the type's
    /// default preference, `udp`, generation 0, network `0` (all ten
    /// attributes filled, as §B.1 asks).
    pub fn new_local<R: rand::Rng + ?Sized>(
        name: &str,
        address: SocketAddr,
        kind: CandidateType,
        rng: &mut R,
    ) -> Candidate {
        Candidate {
            name: name.to_owned(),
            address,
            username: random_fragment(rng),
            password: random_fragment(rng),
            preference: kind.default_preference(),
            protocol: "udp".to_owned(),
            kind,
            generation: 0,
            network: "0".to_owned(),
        }
    }
}
