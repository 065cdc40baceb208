//! Fuzz target `stun`: see `gshare_fuzz::stun` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: gshare_fuzz::maybe_write_seeds("stun"),
    |data: &[u8]| gshare_fuzz::stun::run(data)
);
