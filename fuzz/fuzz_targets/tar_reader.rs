//! Fuzz target `tar_reader`: see `gshare_fuzz::tarfz` for the input format and the invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: gshare_fuzz::maybe_write_seeds("tar_reader"),
    |data: &[u8]| gshare_fuzz::tarfz::run(data)
);
