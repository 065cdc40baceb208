//! Fuzz target `session_stanza`: see `gshare_fuzz::session` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: gshare_fuzz::maybe_write_seeds("session_stanza"),
    |data: &[u8]| gshare_fuzz::session::run(data)
);
