//! Starting a child and, in the child, finding what to run.
//!
//! The start method is Python's "spawn": the child is a fresh execution of this very
//! binary (`/proc/self/exe`, so a rebuilt or deleted file does not matter), never a bare
//! `fork` of a parent that may have other threads. The parent passes, in the environment
//! variable [`ORDERS`], the code to run as two offsets from an anchor function of this
//! crate (ASLR moves the whole binary, never the distance between two of its functions),
//! with the identity of the binary it computed them in: the device and inode of its
//! `/proc/self/exe` and the distance between two anchors. The child refuses, with exit
//! code 2 and a message, unless its own binary matches all three, so a stray variable can
//! never make another program jump anywhere.
//!
//! The child runs its orders before `main` (a function in `.init_array`, which the
//! dynamic loader calls before any Rust code), so that `main`, or libtest's `main` in a
//! test binary, never starts in a child; [`process::init`](super::init) does the same
//! from the first line of `main` where the linker left the constructor out.

use std::os::fd::RawFd;
use std::sync::OnceLock;

/// The environment variable that carries the orders from parent to child.
pub(crate) const ORDERS: &str = "SHMSYNC_PROCESS_ORDERS";
const VERSION: &str = "shmsync-orders-1";

/// What a child runs: an entry (a monomorphised trampoline of this crate) given the
/// user's function (as an address) and inherited descriptors. Returns the exit code.
pub(crate) type Entry = unsafe fn(func: usize, fds: &[RawFd]) -> i32;

/// The anchor the offsets are taken from.
#[inline(never)]
fn base_anchor() -> usize {
    std::hint::black_box(0x5348_4d53)
}

/// A second anchor: its distance from the first identifies the build.
#[inline(never)]
fn check_anchor() -> usize {
    std::hint::black_box(0x5359_4e43) ^ 1
}

fn base() -> usize {
    base_anchor as fn() -> usize as usize
}

fn build_check() -> usize {
    (check_anchor as fn() -> usize as usize).wrapping_sub(base())
}

/// The device and inode of the running binary.
fn binary_identity() -> Option<(u64, u64)> {
    let st = rustix::fs::stat("/proc/self/exe").ok()?;
    Some((st.st_dev, st.st_ino))
}

/// The orders for a child that runs `entry(func, fds)`, named `name`; `func` 0 means
/// none.
pub(crate) fn orders(
    entry: Entry,
    func: usize,
    fds: &[RawFd],
    name: &str,
) -> std::io::Result<String> {
    let (dev, ino) =
        binary_identity().ok_or_else(|| std::io::Error::other("cannot stat /proc/self/exe"))?;
    let name_hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let fds: Vec<String> = fds.iter().map(|fd| fd.to_string()).collect();
    Ok(format!(
        "{VERSION} {dev} {ino} {} {} {} {name_hex} {}",
        build_check(),
        (entry as usize).wrapping_sub(base()),
        // 0 stays 0 (no function), whatever the two processes' bases.
        if func == 0 { 0 } else { func.wrapping_sub(base()) },
        fds.join(",")
    ))
}

/// The offset-free address of `f`, for [`orders`].
pub(crate) fn address<F: Copy>(f: F) -> usize {
    debug_assert_eq!(size_of::<F>(), size_of::<usize>());
    // SAFETY: F is a function pointer type (callers pass `fn(A) -> R`), the size of a
    // usize (checked above in debug builds; fn pointers are usize-sized on Linux).
    unsafe { std::mem::transmute_copy(&f) }
}

/// `addr` as an offset from the anchor, for a [`Cell`](super::pool) to carry.
pub(crate) fn offset_of(addr: usize) -> u64 {
    addr.wrapping_sub(base()) as u64
}

/// The address at `offset` from the anchor.
///
/// # Safety
///
/// `offset` must come from [`offset_of`] in a process running this same binary (the
/// pool's workers check that at start, as every child does).
pub(crate) unsafe fn at_offset(offset: u64) -> usize {
    base().wrapping_add(offset as usize)
}

struct Decoded {
    entry: Entry,
    func: usize,
    fds: Vec<RawFd>,
    name: String,
}

fn decode(orders: &str) -> Result<Decoded, String> {
    let parts: Vec<&str> = orders.split(' ').collect();
    let [version, dev, ino, check, entry, func, name, fds] = parts[..] else {
        return Err(format!("malformed orders {orders:?}"));
    };
    if version != VERSION {
        return Err(format!("orders of another shmsync version ({version})"));
    }
    let number = |s: &str| s.parse::<u64>().map_err(|_| format!("malformed number {s:?}"));
    let (dev, ino, check) = (number(dev)?, number(ino)?, number(check)? as usize);
    if binary_identity() != Some((dev, ino)) || check != build_check() {
        return Err("the orders were written for another binary".into());
    }
    let entry_at = base().wrapping_add(number(entry)? as usize);
    let func = match number(func)? {
        0 => 0,
        offset => base().wrapping_add(offset as usize),
    };
    // SAFETY: the same binary (device, inode and anchor distance match) computed this
    // offset from the address of an `Entry`, so it is one here too.
    let entry: Entry = unsafe { std::mem::transmute::<usize, Entry>(entry_at) };
    let name = (0..name.len() / 2)
        .filter_map(|i| u8::from_str_radix(name.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Vec<u8>>();
    let fds = if fds.is_empty() {
        Vec::new()
    } else {
        fds.split(',')
            .map(|f| f.parse().map_err(|_| format!("malformed fd {f:?}")))
            .collect::<Result<_, _>>()?
    };
    Ok(Decoded { entry, func, fds, name: String::from_utf8_lossy(&name).into_owned() })
}

static NAME: OnceLock<String> = OnceLock::new();

/// This process's name: the one its parent gave it, or "MainProcess".
pub(crate) fn current_name() -> &'static str {
    NAME.get().map_or("MainProcess", String::as_str)
}

/// In a child: runs its orders and exits, never returning. Elsewhere: returns at once.
pub(crate) fn run_if_child() {
    let Some(orders) = std::env::var_os(ORDERS) else { return };
    // SAFETY: called before `main` (from `.init_array`) or as the first line of `main`
    // (the documented contract of `process::init`): no other thread reads the
    // environment yet. Removing the variable keeps it from programs the task starts.
    unsafe { std::env::remove_var(ORDERS) };
    let code = match decode(&orders.to_string_lossy()) {
        Ok(d) => {
            let _ = NAME.set(d.name);
            // SAFETY: `decode` checked that this binary wrote the orders.
            unsafe { (d.entry)(d.func, &d.fds) }
        }
        Err(why) => {
            eprintln!("shmsync: this process was started with {ORDERS} but refuses it: {why}");
            2
        }
    };
    std::process::exit(code);
}

extern "C" fn before_main() {
    run_if_child();
}

/// Runs a child's orders before `main`. Referenced by every spawn so that the linker
/// keeps it.
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static BEFORE_MAIN: extern "C" fn() = before_main;

/// Keeps [`BEFORE_MAIN`] linked into any binary that starts children.
pub(crate) fn keep_constructor() {
    std::hint::black_box(&BEFORE_MAIN);
}
