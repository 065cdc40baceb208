//! Fuzz target `http_heads`: see `gshare_fuzz::http` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: gshare_fuzz::maybe_write_seeds("http_heads"),
    |data: &[u8]| gshare_fuzz::http::run(data)
);
