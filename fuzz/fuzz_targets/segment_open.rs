//! Feeds arbitrary bytes to the open path as a segment file.
//!
//! The first input byte picks the type to open the file as and the mode:
//! - raw (high bit clear): the rest of the input is the whole file;
//! - patched (high bit set): a valid segment image has the rest of the input applied as
//!   `(offset, byte)` patches, which reaches the checks behind the magic and state words.
//!
//! Whatever the bytes, `open` must return a segment or a typed error (never `Io`, never a
//! panic, never a hang: the open timeout is zero), and an opened segment must be readable;
//! `segments`, `attached`, `inspect` and `gc_dry_run` must cope with the file too.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmsync::{OpenError, Options, Shared, ShmSafe};

#[repr(C)]
#[derive(Clone, Copy)]
struct Probe {
    a: u32,
    b: u32,
    c: u64,
}
// SAFETY: repr(C), plain integers: every bit pattern is valid.
unsafe impl ShmSafe for Probe {}

const NAME: &str = "fuzzed";

struct Setup {
    dir: PathBuf,
    valid_image: Vec<u8>,
}

extern "C" fn remove_dir() {
    if let Some(s) = SETUP.get() {
        let _ = std::fs::remove_file(s.dir.join(NAME));
        let _ = std::fs::remove_dir(&s.dir);
    }
}

static SETUP: OnceLock<Setup> = OnceLock::new();

fn setup() -> &'static Setup {
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("shmsync-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // SAFETY: registers a plain extern "C" fn; libFuzzer exits through exit().
        unsafe { libc::atexit(remove_dir) };
        let opts = Options::new().dir(&dir);
        let seg = Shared::<Probe>::create_with(NAME, |p| p.c = 7, &opts).unwrap();
        let valid_image = std::fs::read(dir.join(NAME)).unwrap();
        drop(seg);
        Shared::<Probe>::unlink_with(NAME, &opts).unwrap();
        Setup { dir, valid_image }
    })
}

fn check<T: ShmSafe + Copy>(opts: &Options) {
    match Shared::<T>::open_with(NAME, opts) {
        Ok(seg) => {
            // Touch every payload byte: bounds must hold.
            let _value: T = *seg;
            assert!(seg.info().len() >= 128);
        }
        Err(OpenError::Io(e)) => panic!("hostile bytes gave an OS error: {e}"),
        Err(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let s = setup();
    let file = if mode & 0x80 != 0 {
        let mut image = s.valid_image.clone();
        for patch in rest.chunks_exact(2) {
            let at = usize::from(patch[0]) % image.len();
            image[at] = patch[1];
        }
        image
    } else {
        rest.to_vec()
    };
    std::fs::write(s.dir.join(NAME), &file).unwrap();

    let opts = Options::new().dir(&s.dir).open_timeout(Duration::ZERO);
    match mode & 0x3 {
        0 => check::<Probe>(&opts),
        1 => check::<u64>(&opts),
        2 => check::<[u8; 200]>(&opts),
        _ => check::<[u64; 3]>(&opts),
    }
    // The tools read the same bytes: listing, attachers, inspection and a dry collection
    // must describe or refuse them, never panic or loop.
    for info in shmsync::segments(&opts).unwrap_or_default() {
        let _ = info.attached();
    }
    let _ = shmsync::inspect(NAME, &opts);
    let _ = shmsync::gc_dry_run(&opts);
});
