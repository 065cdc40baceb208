//! Where secrets come from: the operating system's RNG in production, a
//! seeded generator only where a simulation asks for determinism.
//!
//! Every value that authenticates in the Google dialect (ICE usernames and
//! passwords, STUN transaction ids, session ids, HTTP source paths) is drawn
//! from a [`SecretRng`]. [`SecretRng::Os`] reads `getrandom(2)` for every
//! draw (`rand::rngs::OsRng`), so no value is predictable from an earlier
//! one or from a small seed; [`SecretRng::Seeded`] exists for simulations
//! and tests that replay runs, and production code never builds one.
//!
//! A leaf module: it imports nothing from the crate, so every layer may use
//! it.

use rand::rngs::{OsRng, StdRng};
use rand::{RngCore, SeedableRng, TryRngCore};

/// The generator behind protocol secrets.
#[derive(Debug)]
pub enum SecretRng {
    /// The operating system's RNG, read on every draw (production).
    Os,
    /// A seeded generator, for deterministic simulations only (boxed: the
    /// production variant should not carry its 300 bytes).
    Seeded(Box<StdRng>),
}

impl SecretRng {
    /// A seeded generator (simulations, tests).
    pub fn seeded(seed: u64) -> SecretRng {
        SecretRng::Seeded(Box::new(StdRng::seed_from_u64(seed)))
    }

    /// True for [`SecretRng::Os`].
    pub fn is_os(&self) -> bool {
        matches!(self, SecretRng::Os)
    }
}

impl RngCore for SecretRng {
    fn next_u32(&mut self) -> u32 {
        match self {
            // `unwrap_err` turns an OS RNG failure (no entropy source at
            // all) into a panic: there is no safe value to continue with.
            SecretRng::Os => OsRng.unwrap_err().next_u32(),
            SecretRng::Seeded(r) => r.next_u32(),
        }
    }

    fn next_u64(&mut self) -> u64 {
        match self {
            SecretRng::Os => OsRng.unwrap_err().next_u64(),
            SecretRng::Seeded(r) => r.next_u64(),
        }
    }

    fn fill_bytes(&mut self, dst: &mut [u8]) {
        match self {
            SecretRng::Os => OsRng.unwrap_err().fill_bytes(dst),
            SecretRng::Seeded(r) => r.fill_bytes(dst),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn os_draws_differ_and_seeded_draws_repeat() {
        let mut os = SecretRng::Os;
        let a: [u8; 16] = os.random();
        let b: [u8; 16] = os.random();
        assert_ne!(a, b);
        let x: u64 = SecretRng::seeded(5).random();
        let y: u64 = SecretRng::seeded(5).random();
        assert_eq!(x, y);
    }
}
