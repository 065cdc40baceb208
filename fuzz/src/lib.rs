//! gshare's fuzz targets (the bodies; `fuzz_targets/*.rs` are thin
//! wrappers) and their seed corpora, generated from real data and real code.
//!
//! Seeds: run a target binary with `GSHARE_FUZZ_SEEDS=<dir>`; its `init`
//! writes the seeds into `<dir>` and exits (scripts/fuzz does this), so no
//! second build of the crate is needed.

#![allow(clippy::missing_panics_doc)]

pub mod http;
pub mod ptcp;
pub mod seeds;
pub mod session;
pub mod stun;
pub mod tarfz;

/// Called from each target's `init`: if `GSHARE_FUZZ_SEEDS` names a
/// directory, write this target's seeds there and exit.
pub fn maybe_write_seeds(target: &str) {
    let Some(dir) = std::env::var_os("GSHARE_FUZZ_SEEDS") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    std::fs::create_dir_all(&dir).expect("create seed dir");
    let seeds = seeds::for_target(target);
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
    eprintln!(
        "wrote {} seeds for {target} to {}",
        seeds.len(),
        dir.display()
    );
    std::process::exit(0);
}
