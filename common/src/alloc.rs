//! Settings of the memory allocator (mimalloc) that must be in place before the process
//! allocates anything: mimalloc reads them from the environment once, at load.
//!
//! `MIMALLOC_ARENA_EAGER_COMMIT=0`: by default, on Linux, mimalloc commits each arena (1 GiB)
//! when it reserves it and asks for transparent huge pages on all of it; the state of an
//! aggregator with millions of keys then held ~40 MiB of RSS per million keys in
//! partly used huge pages beyond what it allocated (189 against 150 MiB per million keys
//! allocated, measured with a counting allocator), and the faults of huge pages cost
//! CPU (the kernel compacting memory to find them). Committed on demand, RSS follows
//! what is allocated (docs/aggregator.md § State and memory, README).
//!
//! [`settle`] re-executes the program with the settings in its environment when one is
//! missing. A value the operator set is kept.

use std::ffi::OsString;

/// The allocator's settings: environment variable and value.
pub const SETTINGS: &[(&str, &str)] = &[("MIMALLOC_ARENA_EAGER_COMMIT", "0")];

/// The settings missing from an environment that has `present`.
pub fn missing(present: impl Fn(&str) -> bool) -> Vec<(&'static str, &'static str)> {
    SETTINGS.iter().copied().filter(|(k, _)| !present(k)).collect()
}

/// Makes the allocator's settings effective: when one is missing from the environment,
/// replaces the process with the same program, arguments and environment plus the
/// missing settings (same pid; it does not return then). Returns `Ok(())` when nothing was
/// missing, and the error when re-executing failed (the process then goes on with the
/// allocator's defaults: it works, with more memory).
pub fn settle() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    let missing = missing(|k| std::env::var_os(k).is_some());
    if missing.is_empty() {
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    Err(std::process::Command::new(exe).args(args).envs(missing).exec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_the_operator_did_not_set_is_added() {
        assert_eq!(missing(|_| false), vec![("MIMALLOC_ARENA_EAGER_COMMIT", "0")]);
        assert!(missing(|k| k == "MIMALLOC_ARENA_EAGER_COMMIT").is_empty());
    }
}
