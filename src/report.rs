//! Where a long command's human-readable progress goes: stdout, or stderr when stdout carries
//! one JSON summary (`--json`), so that `ihub bench --json | jq` reads the summary alone.

use std::sync::atomic::{AtomicBool, Ordering};

static TO_STDERR: AtomicBool = AtomicBool::new(false);

/// Sends [`say!`](crate::say) to stderr from now on when `json` (stdout is the summary's).
pub fn summary_on_stdout(json: bool) {
    TO_STDERR.store(json, Ordering::Relaxed);
}

pub fn progress_to_stderr() -> bool {
    TO_STDERR.load(Ordering::Relaxed)
}

/// `println!` for progress: to stderr under `--json`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        if $crate::report::progress_to_stderr() {
            eprintln!($($arg)*)
        } else {
            println!($($arg)*)
        }
    };
}
