//! Fuzz target `pseudotcp_segment`: see `gshare_fuzz::ptcp` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: gshare_fuzz::maybe_write_seeds("pseudotcp_segment"),
    |data: &[u8]| gshare_fuzz::ptcp::run(data)
);
