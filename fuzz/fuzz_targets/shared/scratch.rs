//! A scratch directory for one fuzzing process, removed when libFuzzer exits.
//!
//! Included by the targets with `#[path]`; not a target itself.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_dir() {
    if let Some(d) = DIR.get() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `<tmp>/shmsync-fuzz-<tag>-<pid>`, created on first use.
pub fn dir(tag: &str) -> &'static Path {
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("shmsync-fuzz-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        // SAFETY: registers a plain extern "C" fn; libFuzzer exits through exit().
        unsafe { libc::atexit(remove_dir) };
        d
    })
}
