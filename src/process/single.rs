//! `Process`: one function run in a child process.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::child::{self, Entry};
use super::transfer::Transfer;

/// Why a child process did not hand back its function's result.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// The function panicked; `message` is the panic's message.
    Panicked {
        /// The panic message (`"Box<dyn Any>"` when the payload was not a string).
        message: String,
    },
    /// A signal ended the child (`kill -9` is `signal: 9`).
    Killed {
        /// The signal number.
        signal: i32,
    },
    /// The child exited with a non-zero code without a result (it called
    /// `std::process::exit`, or refused its orders: code 2).
    Exited {
        /// The exit code.
        code: i32,
    },
    /// `join_timeout` gave up; the child lives on.
    Timeout,
    /// The child could not be started.
    Spawn(io::Error),
    /// The child's result could not be read back (an I/O error, or bytes that do not
    /// hold a value of the result type).
    Io(io::Error),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Panicked { message } => write!(f, "the child process panicked: {message}"),
            Self::Killed { signal } => write!(f, "the child process was killed by signal {signal}"),
            Self::Exited { code } => {
                write!(f, "the child process exited with code {code} and no result")
            }
            Self::Timeout => f.write_str("timed out waiting for the child process"),
            Self::Spawn(e) => write!(f, "could not start the child process: {e}"),
            Self::Io(e) => write!(f, "could not read the child's result: {e}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) | Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// The channel's layout: a header, then the argument, then the result or the panic
/// message. Written with `pwrite`, read with `pread` once the writer is done (the child
/// reads the argument the parent wrote before starting it; the parent reads the result
/// after the child exited), so no shared-memory protocol is needed.
mod channel {
    pub(super) const HEADER: u64 = 32;
    /// `state`: the child returned a value.
    pub(super) const RETURNED: u32 = 1;
    /// `state`: the child's function panicked.
    pub(super) const PANICKED: u32 = 2;
    /// Exit code of a child whose function panicked.
    pub(super) const PANIC_EXIT: i32 = 101;

    /// `[state u32, _ u32, arg_len u64, out_at u64, out_len u64]`.
    #[derive(Clone, Copy, Debug, Default)]
    pub(super) struct Header {
        pub(super) state: u32,
        pub(super) arg_len: u64,
        pub(super) out_at: u64,
        pub(super) out_len: u64,
    }

    impl Header {
        pub(super) fn to_bytes(self) -> [u8; HEADER as usize] {
            let mut b = [0; HEADER as usize];
            b[0..4].copy_from_slice(&self.state.to_le_bytes());
            b[8..16].copy_from_slice(&self.arg_len.to_le_bytes());
            b[16..24].copy_from_slice(&self.out_at.to_le_bytes());
            b[24..32].copy_from_slice(&self.out_len.to_le_bytes());
            b
        }

        pub(super) fn from_bytes(b: &[u8; HEADER as usize]) -> Self {
            let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
            Self {
                state: u32::from_le_bytes(b[0..4].try_into().unwrap_or([0; 4])),
                arg_len: u64_at(8),
                out_at: u64_at(16),
                out_len: u64_at(24),
            }
        }
    }
}

fn read_at(fd: &OwnedFd, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    // Bounded: a child cannot make the parent allocate more than the file holds.
    let size = rustix::fs::fstat(fd)?.st_size as u64;
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(io::Error::other("the child's channel is shorter than its header says"));
    }
    let mut buf = vec![0; len as usize];
    let mut done = 0;
    while done < buf.len() {
        let n = rustix::io::pread(fd, &mut buf[done..], offset + done as u64)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += n;
    }
    Ok(buf)
}

fn write_at(fd: &OwnedFd, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::pwrite(fd, &bytes[done..], offset + done as u64)?;
    }
    Ok(())
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "Box<dyn Any>".to_owned()
    }
}

/// The child's side: reads the argument, runs `func`, writes the result or the panic.
///
/// # Safety
///
/// `func` must be the address of an `fn(A) -> R` and `fds[0]` the channel, as
/// [`Builder::spawn`] passes them.
unsafe fn run_in_child<A: Transfer, R: Transfer>(func: usize, fds: &[RawFd]) -> i32 {
    use std::os::fd::FromRawFd;
    let Some(&raw) = fds.first() else { return 2 };
    // SAFETY: the parent passed this descriptor, open and ours alone, for this purpose.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let header = match read_at(&fd, 0, channel::HEADER) {
        Ok(b) => channel::Header::from_bytes(b.as_slice().try_into().unwrap_or(&[0; 32])),
        Err(_) => return 3,
    };
    let Ok(arg_bytes) = read_at(&fd, channel::HEADER, header.arg_len) else { return 3 };
    let Some((arg, _)) = A::decode(&arg_bytes) else { return 3 };
    // SAFETY: the caller's contract: `func` is an `fn(A) -> R` of this binary.
    let f: fn(A) -> R = unsafe { std::mem::transmute_copy::<usize, fn(A) -> R>(&func) };
    let out_at = channel::HEADER + header.arg_len;
    let (state, bytes, code) = match catch_unwind(AssertUnwindSafe(|| f(arg))) {
        Ok(result) => {
            let mut bytes = Vec::new();
            result.encode(&mut bytes);
            (channel::RETURNED, bytes, 0)
        }
        Err(payload) => {
            (channel::PANICKED, panic_message(&*payload).into_bytes(), channel::PANIC_EXIT)
        }
    };
    let done =
        channel::Header { state, arg_len: header.arg_len, out_at, out_len: bytes.len() as u64 };
    if write_at(&fd, out_at, &bytes).and_then(|()| write_at(&fd, 0, &done.to_bytes())).is_err() {
        return 3;
    }
    code
}

/// Starts the executable again with `orders` and `fds` inherited; `worker` children
/// also die with their parent (`PR_SET_PDEATHSIG`).
pub(crate) fn start(orders: String, fds: &[RawFd], die_with_parent: bool) -> io::Result<Child> {
    child::keep_constructor();
    let mut command = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        command.arg0(arg0);
    }
    command.env(child::ORDERS, orders).stdin(Stdio::null());
    let fds = fds.to_vec();
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (fcntl, prctl, getppid, _exit) on plain integers.
    unsafe {
        command.pre_exec(move || {
            for &fd in &fds {
                // Inherit the descriptor across exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    if die_with_parent { spawn_on_spawner(command) } else { command.spawn() }
}

/// Spawns `command` from the spawner, a thread that lives as long as the process:
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends, and a pool may
/// replace a worker from any thread, short-lived ones included.
fn spawn_on_spawner(command: Command) -> io::Result<Child> {
    type Job = (Command, std::sync::mpsc::SyncSender<io::Result<Child>>);
    static SPAWNER: Mutex<Option<(u32, std::sync::mpsc::Sender<Job>)>> = Mutex::new(None);
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    {
        let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        // After a fork the thread is gone: start another in this process.
        if spawner.as_ref().is_none_or(|(owner, _)| *owner != pid) {
            let (tx, rx) = std::sync::mpsc::channel::<Job>();
            std::thread::Builder::new().name("shmsync-spawner".into()).spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })?;
            *spawner = Some((pid, tx));
        }
        let sender = &spawner.as_ref().unwrap_or_else(|| unreachable!()).1;
        sender
            .send((command, reply))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    }
    answer.recv().map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// A function running in a child process: Python's `multiprocessing.Process`, started
/// with `spawn` and joined for its result.
///
/// # Examples
///
/// ```no_run
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     shmsync::process::init(); // in the child: runs `square` and exits
///     let p = shmsync::Process::spawn(square, 7u64)?;
///     assert_eq!(p.join()?, 49);
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub struct Process<R = ()> {
    child: Mutex<Child>,
    status: Mutex<Option<ExitStatus>>,
    pid: u32,
    name: String,
    channel: OwnedFd,
    _result: PhantomData<fn() -> R>,
}

/// Options for a [`Process`]: its name, and the anonymous objects it inherits.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    name: Option<String>,
    inherit: Vec<crate::Inheritable>,
}

impl Process<()> {
    /// Options for the next process: `Process::builder().name("writer").spawn(f, arg)`.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<R: Transfer> Process<R> {
    /// Runs `f(arg)` in a new process (named `Process-N`, as Python names them).
    ///
    /// `f` is a function or a closure that captures nothing. The child is this program
    /// started again; it runs `f` before `main` (see [`process::init`](super::init)).
    ///
    /// # Errors
    ///
    /// `Spawn` if the process could not be started.
    pub fn spawn<A: Transfer>(f: fn(A) -> R, arg: A) -> Result<Self, ProcessError> {
        Builder::default().spawn(f, arg)
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name given by [`Builder::name`], or `Process-N`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        self.poll_status().is_none()
    }

    /// Python's `exitcode`: `None` while running, the exit code once it exited, `-N` if
    /// signal `N` ended it.
    pub fn exitcode(&self) -> Option<i32> {
        self.poll_status().map(|s| s.code().unwrap_or_else(|| -s.signal().unwrap_or(0)))
    }

    /// Waits for the child and returns its function's result.
    ///
    /// # Errors
    ///
    /// `Panicked` with the panic's message, `Killed`, `Exited`, `Io`.
    pub fn join(&self) -> Result<R, ProcessError> {
        self.join_deadline(None)
    }

    /// [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout` if the child is still running (it lives on); those of `join`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<R, ProcessError> {
        self.join_deadline(Some(Instant::now() + timeout))
    }

    /// Sends SIGTERM (Python's `terminate`); `exitcode` becomes -15 once it ends.
    pub fn terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    /// Sends SIGKILL (Python's `kill`); `exitcode` becomes -9.
    pub fn kill(&self) {
        self.signal(rustix::process::Signal::KILL);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        // A reaped child's pid may belong to another process by now: never signal it.
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
    }

    /// The exit status, reaping the child if it has exited.
    fn poll_status(&self) -> Option<ExitStatus> {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if status.is_none() {
            let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
            *status = child.try_wait().ok().flatten();
        }
        *status
    }

    fn join_deadline(&self, deadline: Option<Instant>) -> Result<R, ProcessError> {
        let status = match deadline {
            None => {
                let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
                if status.is_none() {
                    let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
                    *status = Some(child.wait().map_err(ProcessError::Io)?);
                }
                status.unwrap_or_else(|| unreachable!())
            }
            Some(deadline) => loop {
                if let Some(status) = self.poll_status() {
                    break status;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ProcessError::Timeout);
                }
                wait_exit(self.pid, left);
            },
        };
        self.outcome(status)
    }

    fn outcome(&self, status: ExitStatus) -> Result<R, ProcessError> {
        let header = read_at(&self.channel, 0, channel::HEADER).map_err(ProcessError::Io)?;
        let header = channel::Header::from_bytes(header.as_slice().try_into().unwrap_or(&[0; 32]));
        let output = || read_at(&self.channel, header.out_at, header.out_len.min(1 << 30));
        if header.state == channel::PANICKED {
            let bytes = output().map_err(ProcessError::Io)?;
            return Err(ProcessError::Panicked {
                message: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        if let Some(signal) = status.signal() {
            return Err(ProcessError::Killed { signal });
        }
        match (status.code(), header.state) {
            (Some(0), channel::RETURNED) => {
                let bytes = output().map_err(ProcessError::Io)?;
                R::decode(&bytes).map(|(r, _)| r).ok_or_else(|| {
                    ProcessError::Io(io::Error::other("the child's result does not decode"))
                })
            }
            (code, _) => Err(ProcessError::Exited { code: code.unwrap_or(-1) }),
        }
    }
}

/// Sleeps until the process `pid` (our child) exits or `timeout` passes: a poll on its
/// pidfd, or a short nap where pidfds are missing.
pub(crate) fn wait_exit(pid: u32, timeout: Duration) {
    use rustix::event::{PollFd, PollFlags, poll};
    let pidfd = rustix::process::Pid::from_raw(pid as i32).and_then(|pid| {
        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
    });
    match pidfd {
        Some(fd) => {
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            let timeout = rustix::time::Timespec {
                tv_sec: timeout.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: i64::from(timeout.subsec_nanos()),
            };
            let _ = poll(&mut fds, Some(&timeout));
        }
        None => std::thread::sleep(timeout.min(Duration::from_millis(1))),
    }
}

impl Builder {
    /// The process's name (Python's `Process(name=...)`), seen by the child in
    /// [`current_process`](super::current_process).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The child inherits this anonymous object's descriptor (made by a
    /// `create_anonymous`; see [`Inheritable`](crate::Inheritable)), under the same
    /// number: pass the token to the child too, and open it there with the type's
    /// `open_inherited`. Only this child gets it; the descriptor stays close-on-exec here.
    #[must_use]
    pub fn inherit(mut self, object: crate::Inheritable) -> Self {
        self.inherit.push(object);
        self
    }

    /// Runs `f(arg)` in a new process: see [`Process::spawn`].
    ///
    /// # Errors
    ///
    /// `Spawn` if the process could not be started.
    pub fn spawn<A: Transfer, R: Transfer>(
        self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<Process<R>, ProcessError> {
        static COUNT: crate::loom::AtomicU32 = crate::loom::AtomicU32::new(0);
        let name = self.name.unwrap_or_else(|| {
            format!("Process-{}", COUNT.fetch_add(1, crate::loom::Ordering::Relaxed) + 1)
        });
        let channel = rustix::fs::memfd_create("shmsync-process", rustix::fs::MemfdFlags::CLOEXEC)
            .map_err(|e| ProcessError::Spawn(e.into()))?;
        let mut arg_bytes = Vec::new();
        arg.encode(&mut arg_bytes);
        let header = channel::Header { arg_len: arg_bytes.len() as u64, ..Default::default() };
        write_at(&channel, 0, &header.to_bytes())
            .and_then(|()| write_at(&channel, channel::HEADER, &arg_bytes))
            .map_err(ProcessError::Spawn)?;
        let fds = [channel.as_raw_fd()];
        let entry: Entry = run_in_child::<A, R>;
        let orders =
            child::orders(entry, child::address(f), &fds, &name).map_err(ProcessError::Spawn)?;
        let mut inherited = fds.to_vec();
        inherited.extend(self.inherit.iter().map(crate::Inheritable::fd));
        let child = start(orders, &inherited, false).map_err(ProcessError::Spawn)?;
        Ok(Process {
            pid: child.id(),
            child: Mutex::new(child),
            status: Mutex::new(None),
            name,
            channel,
            _result: PhantomData,
        })
    }
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}
