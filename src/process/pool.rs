//! `Pool`: a fixed set of worker processes that run tasks for the calling process.
//!
//! Each worker has its own SPSC task queue; all of them push results into one MPMC
//! queue. Both live in memfd segments that the workers inherit, so the pool leaves nothing
//! in `/dev/shm`, even when the parent is killed. Work travels in 4 KiB *cells*, each a
//! chunk of items (one queue operation per chunk). The parent gives each worker at most
//! [`IN_FLIGHT`] cells at a time and remembers which, so a worker's death names exactly
//! the tasks it took with it.
//!
//! Nobody in the parent runs a background thread: a thread waiting for a result becomes
//! the *collector* if nobody else is (a lock it only tries): it pops results, hands each
//! to the call that waits for it, refills the workers, and notices dead workers (reaps
//! them, fails their tasks with `WorkerDied`, starts replacements).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::Child;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::child::{self, Entry};
use super::single::{panic_message, start};
use super::transfer::Transfer;
use crate::{PopError, mpmc, spsc};

/// Bytes of items or results in one cell.
const CELL_BYTES: usize = 4056;
/// Cells a worker holds at most: one running, one waiting, so it never idles between
/// two.
const IN_FLIGHT: usize = 8;
/// How long a collector waits for a result before it looks at the workers again.
const COLLECT_SLICE: Duration = Duration::from_millis(2);
/// The longest panic message a result carries.
const MESSAGE_MAX: usize = 200;

/// A chunk of work or of results.
#[repr(C)]
#[derive(Clone, Copy)]
struct Cell {
    /// The task's id, given by the parent.
    task: u64,
    /// The chunk runner (`run_chunk::<A, R>`), as an offset in the binary.
    entry: u64,
    /// The user's function, as an offset in the binary.
    func: u64,
    /// The worker that ran it (results only).
    worker: u32,
    /// `DONE`, `BAD_INPUT` or `TOO_LARGE` (results only).
    kind: u32,
    /// Items in `bytes`.
    count: u32,
    /// Bytes used in `bytes`.
    len: u32,
    bytes: [u8; CELL_BYTES],
}

const _: () = assert!(size_of::<Cell>() == 4096);

// SAFETY: repr(C) of integers and a byte array, no padding (asserted size), every bit
// pattern valid.
unsafe impl bytemuck::Zeroable for Cell {}
// SAFETY: as above; Copy and 'static.
unsafe impl bytemuck::Pod for Cell {}
// SAFETY: Pod. The tag is versioned by hand.
unsafe impl crate::ShmSafe for Cell {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::process::Cell/1")
    }
}

/// `Cell::kind` of a result whose items each carry an outcome tag (some panicked).
const DONE: u32 = 1;
/// `Cell::kind` of a result of plain results, one per item: none panicked.
const DONE_PLAIN: u32 = 4;
/// `Cell::kind`: the worker could not decode the items.
const BAD_INPUT: u32 = 2;
/// `Cell::kind`: the results did not fit in a cell.
const TOO_LARGE: u32 = 3;
/// An item's outcome tag: the result follows.
const ITEM_OK: u8 = 0;
/// An item's outcome tag: it panicked; a u16 length and the message follow.
const ITEM_PANICKED: u8 = 1;

/// Why a pool call did not return a result.
#[derive(Debug)]
#[non_exhaustive]
pub enum PoolError {
    /// The worker running the task died (killed, aborted, out of memory) before it
    /// answered. The pool replaced it and stays usable.
    WorkerDied {
        /// The items of the call the lost task held (`index..index + 1` for `apply`).
        items: Range<usize>,
        /// The dead worker's process id.
        pid: u32,
    },
    /// The function panicked on one item; the worker survived.
    Panicked {
        /// The item's index in the call.
        index: usize,
        /// The panic's message (up to 200 bytes).
        message: String,
    },
    /// The pool was closed or terminated before the call.
    Closed,
    /// `get_timeout` gave up; the task goes on.
    Timeout,
    /// An item or its results do not fit in a task cell (4,056 bytes), or came back
    /// undecodable.
    TooLarge {
        /// The first item concerned.
        index: usize,
    },
    /// A worker could not be started.
    Spawn(io::Error),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WorkerDied { items, pid } => write!(
                f,
                "worker process {pid} died running items {}..{} of the call",
                items.start, items.end
            ),
            Self::Panicked { index, message } => {
                write!(f, "the task panicked on item {index}: {message}")
            }
            Self::Closed => f.write_str("the pool is closed"),
            Self::Timeout => f.write_str("timed out waiting for the result"),
            Self::TooLarge { index } => {
                write!(
                    f,
                    "item {index} or its result does not fit in a task cell ({CELL_BYTES} bytes)"
                )
            }
            Self::Spawn(e) => write!(f, "could not start a worker process: {e}"),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// What a call receives for each of its tasks: the task and its `Outcomes<R>`, decoded
/// by whoever collected it (so only a pointer crosses between threads).
type Answer = (u64, Box<dyn std::any::Any + Send>);

/// Decodes a task's answer into its call's `Outcomes<R>`.
type Decoder = fn(Result<Cell, PoolError>, &Range<usize>) -> Box<dyn std::any::Any + Send>;

/// One task's answer as a call sees it: the task's index in the call and its items'
/// outcomes.
type Chunk<R> = (usize, Outcomes<R>);

/// The chunk runner, in a worker.
///
/// # Safety
///
/// `func` is the address of an `fn(A) -> R` of this binary.
unsafe fn run_chunk<A: Transfer, R: Transfer>(func: usize, task: &Cell, out: &mut Cell) {
    // SAFETY: the caller's contract.
    let f: fn(A) -> R = unsafe { std::mem::transmute_copy::<usize, fn(A) -> R>(&func) };
    let input = &task.bytes[..(task.len as usize).min(CELL_BYTES)];
    let count = task.count as usize;
    let Some(items) = A::decode_all(input, count) else {
        out.kind = BAD_INPUT;
        return;
    };
    // Run them all under one catch_unwind; a panic costs only its own item, and the
    // run resumes after it.
    let mut results: Vec<R> = Vec::with_capacity(count);
    let mut panics: Vec<(usize, String)> = Vec::new();
    let mut items = items.into_iter();
    loop {
        let ran = catch_unwind(AssertUnwindSafe(|| {
            for item in items.by_ref() {
                results.push(f(item));
            }
        }));
        match ran {
            Ok(()) => break,
            Err(payload) => panics.push((results.len() + panics.len(), panic_message(&*payload))),
        }
    }
    let mut bytes = Vec::with_capacity(CELL_BYTES);
    if panics.is_empty() {
        R::encode_all(&results, &mut bytes);
        out.kind = DONE_PLAIN;
    } else {
        let mut results = results.into_iter();
        let mut panics = panics.into_iter().peekable();
        for index in 0..count {
            if panics.peek().is_some_and(|(at, _)| *at == index) {
                let Some((_, message)) = panics.next() else { break };
                // What the items after this one need at most, so a message never crowds
                // out results.
                let rest = (count - index - 1) * (1 + R::MAX_LEN.unwrap_or(0));
                let room = CELL_BYTES.saturating_sub(bytes.len() + rest + 3);
                let mut cut = message.len().min(MESSAGE_MAX).min(room);
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                bytes.push(ITEM_PANICKED);
                bytes.extend_from_slice(&(cut as u16).to_le_bytes());
                bytes.extend_from_slice(&message.as_bytes()[..cut]);
            } else if let Some(result) = results.next() {
                bytes.push(ITEM_OK);
                result.encode(&mut bytes);
            }
        }
        out.kind = DONE;
    }
    if bytes.len() > CELL_BYTES {
        out.kind = TOO_LARGE;
        return;
    }
    out.bytes[..bytes.len()].copy_from_slice(&bytes);
    out.len = bytes.len() as u32;
    out.count = task.count;
}

type ChunkRunner = unsafe fn(func: usize, task: &Cell, out: &mut Cell);

/// A worker's main loop: take a cell, run it, push the results; leave when the parent
/// is gone or retires this worker (its task queue is then disconnected).
///
/// # Safety
///
/// As an [`Entry`]: `fds` are the task queue's and the results queue's descriptors,
/// `func` an `fn()` initializer or 0, all from this binary's pool.
unsafe fn worker_main(func: usize, fds: &[RawFd]) -> i32 {
    use std::os::fd::FromRawFd;
    let [task_fd, results_fd, worker] = *fds else { return 2 };
    // SAFETY: descriptors the parent passed to this child alone.
    let (task_fd, results_fd) =
        unsafe { (OwnedFd::from_raw_fd(task_fd), OwnedFd::from_raw_fd(results_fd)) };

    let (Ok(mut tasks), Ok(results)) = (
        spsc::Consumer::<Cell>::open_fd(&task_fd, "pool-tasks"),
        mpmc::Queue::<Cell>::open_fd(&results_fd, "pool-results"),
    ) else {
        return 3;
    };
    if func != 0 {
        // SAFETY: the parent passed the address of an `fn()` of this binary.
        let init: fn() = unsafe { std::mem::transmute_copy::<usize, fn()>(&func) };
        if catch_unwind(init).is_err() {
            return 4;
        }
    }
    loop {
        let task = match tasks.pop() {
            Ok(task) => task,
            Err(PopError::Disconnected) => return 0,
            Err(_) => return 3,
        };
        let mut out = bytemuck::Zeroable::zeroed();
        let out_ref: &mut Cell = &mut out;
        out_ref.task = task.task;
        out_ref.worker = worker as u32;
        // SAFETY: the parent wrote this offset for a `run_chunk::<A, R>` of this binary
        // (checked at the worker's start) and `func` for its `fn(A) -> R`.
        unsafe {
            let runner: ChunkRunner =
                std::mem::transmute_copy::<usize, ChunkRunner>(&child::at_offset(task.entry));
            runner(child::at_offset(task.func), &task, out_ref);
        }
        if results.push(out).is_err() {
            return 3;
        }
    }
}

/// One worker process and what it holds.
struct Worker {
    id: u32,
    pid: u32,
    child: Child,
    tasks: spsc::Producer<Cell>,
    /// Ids of the cells it holds, oldest first.
    in_flight: Vec<u64>,
    /// Cells it finished, for `max_tasks_per_child`.
    done: usize,
    /// No more cells: it leaves once it finished those it has.
    retiring: bool,
}

/// A task not yet handed to a worker: where its items' bytes are. The cell is written
/// straight into a worker's queue when it is handed out, so a call of a million items
/// costs one copy of their bytes, not a cell each waiting in memory.
struct Pending {
    task: u64,
    entry: u64,
    func: u64,
    count: u32,
    /// The call's items, encoded one after the other.
    data: Arc<Vec<u8>>,
    bytes: Range<usize>,
}

/// A call's registration of one task: where its answer goes.
struct Route {
    answer: Sender<Answer>,
    /// The call's items this task holds.
    items: Range<usize>,
    decode: Decoder,
}

impl Route {
    /// Decodes `outcome` for the call and sends it (a call that gave up is no error).
    fn answer(self, task: u64, outcome: Result<Cell, PoolError>) {
        let _ = self.answer.send((task, (self.decode)(outcome, &self.items)));
    }
}

struct State {
    workers: Vec<Worker>,
    /// Workers that were told to leave and have not yet been reaped.
    leaving: Vec<Child>,
    pending: VecDeque<Pending>,
    routes: HashMap<u64, Route>,
    next_task: u64,
    next_worker: u32,
    closed: bool,
    terminated: bool,
}

struct Config {
    processes: usize,
    initializer: Option<fn()>,
    max_tasks_per_child: Option<usize>,
    chunksize: Option<usize>,
    inherit: Vec<crate::Inheritable>,
}

struct Inner {
    state: Mutex<State>,
    results: mpmc::Queue<Cell>,
    results_fd: OwnedFd,
    /// Held by the thread collecting; holds when it last looked at the workers.
    collector: Mutex<Instant>,
    config: Config,
}

/// Python's `multiprocessing.Pool`: worker processes that run functions on items and
/// send the results back.
///
/// A worker killed in the middle of a task fails only the calls waiting on that task,
/// with [`PoolError::WorkerDied`], and is replaced; a task that panics fails with
/// [`PoolError::Panicked`] and its worker carries on. Dropping the pool terminates it,
/// like leaving Python's `with Pool() as pool:` block; if the parent dies, its workers
/// die with it.
///
/// # Examples
///
/// ```no_run
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     shmsync::process::init();
///     let pool = shmsync::Pool::new(shmsync::process::cpu_count())?;
///     let items: Vec<u64> = (0..1000).collect();
///     let squares = pool.map(square, &items)?;
///     assert_eq!(squares[999], 998_001);
///     assert_eq!(pool.apply(square, 12)?, 144);
///     Ok(())
/// }
/// ```
pub struct Pool {
    inner: Arc<Inner>,
}

/// Options for a [`Pool`]: `Pool::builder().processes(4).chunksize(64).build()`.
#[derive(Clone, Debug, Default)]
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<fn()>,
    max_tasks_per_child: Option<usize>,
    chunksize: Option<usize>,
    inherit: Vec<crate::Inheritable>,
}

impl PoolBuilder {
    /// Every worker (replacements too) inherits this anonymous object's descriptor, as
    /// [`Builder::inherit`](super::Builder::inherit) does for one process: pass the token
    /// in the tasks' arguments and open it in the task with the type's `open_inherited`.
    #[must_use]
    pub fn inherit(mut self, object: crate::Inheritable) -> Self {
        self.inherit.push(object);
        self
    }

    /// How many worker processes (default: [`cpu_count`](super::cpu_count)).
    #[must_use]
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// A function each worker runs once when it starts (Python's `initializer`).
    #[must_use]
    pub fn initializer(mut self, f: fn()) -> Self {
        self.initializer = Some(f);
        self
    }

    /// Replace a worker after it ran this many chunks of tasks (Python's
    /// `maxtasksperchild`), to return the memory a leaky task holds.
    #[must_use]
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n.max(1));
        self
    }

    /// Items per task in `map` and `imap` (default: as Python, the items divided by four
    /// times the workers), capped by what fits in a 4 KiB cell.
    #[must_use]
    pub fn chunksize(mut self, n: usize) -> Self {
        self.chunksize = Some(n.max(1));
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    ///
    /// `Spawn` if a worker or the pool's queues could not be made.
    pub fn build(self) -> Result<Pool, PoolError> {
        let processes = self.processes.unwrap_or_else(super::cpu_count).max(1);
        let capacity = (processes * (IN_FLIGHT + 2)).next_power_of_two().max(16);
        let (results, results_fd) =
            mpmc::Queue::<Cell>::create_anonymous_with_fd("shmsync-pool-results", capacity)
                .map_err(|e| PoolError::Spawn(io::Error::other(e)))?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                workers: Vec::new(),
                leaving: Vec::new(),
                pending: VecDeque::new(),
                routes: HashMap::new(),
                next_task: 1,
                next_worker: 0,
                closed: false,
                terminated: false,
            }),
            results,
            results_fd,
            collector: Mutex::new(Instant::now()),
            config: Config {
                processes,
                initializer: self.initializer,
                max_tasks_per_child: self.max_tasks_per_child,
                chunksize: self.chunksize,
                inherit: self.inherit,
            },
        });
        {
            let mut state = inner.lock();
            for _ in 0..processes {
                let worker = inner.start_worker(&mut state)?;
                state.workers.push(worker);
            }
        }
        Ok(Pool { inner })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start_worker(&self, state: &mut State) -> Result<Worker, PoolError> {
        let id = state.next_worker;
        state.next_worker += 1;
        let (tasks, task_fd) =
            spsc::Producer::<Cell>::create_anonymous_with_fd("shmsync-pool-tasks", IN_FLIGHT)
                .map_err(|e| PoolError::Spawn(io::Error::other(e)))?;
        let fds = [task_fd.as_raw_fd(), self.results_fd.as_raw_fd()];
        let init = self.config.initializer.map_or(0, child::address);
        let entry: Entry = worker_main;
        let mut orders_fds = fds.to_vec();
        orders_fds.push(id as RawFd);
        let orders = child::orders(entry, init, &orders_fds, &format!("PoolWorker-{}", id + 1))
            .map_err(PoolError::Spawn)?;
        let mut inherited = fds.to_vec();
        inherited.extend(self.config.inherit.iter().map(crate::Inheritable::fd));
        let child = start(orders, &inherited, true).map_err(PoolError::Spawn)?;
        // The child has its own copy of the descriptor now.
        drop(task_fd);
        Ok(Worker {
            id,
            pid: child.id(),
            child,
            tasks,
            in_flight: Vec::new(),
            done: 0,
            retiring: false,
        })
    }

    /// Registers `cells` (their `task` fields are set here) for the call answered on
    /// `answer`, and hands out what the workers can take.
    fn submit(
        &self,
        packed: Packed,
        answer: &Sender<Answer>,
        decode: Decoder,
    ) -> Result<Range<u64>, PoolError> {
        let mut state = self.lock();
        if state.closed || state.terminated {
            return Err(PoolError::Closed);
        }
        let first = state.next_task;
        for (bytes, items) in packed.tasks {
            let task = state.next_task;
            state.next_task += 1;
            let count = items.len() as u32;
            state.routes.insert(task, Route { answer: answer.clone(), items, decode });
            state.pending.push_back(Pending {
                task,
                entry: packed.entry,
                func: packed.func,
                count,
                data: Arc::clone(&packed.data),
                bytes,
            });
        }
        let last = state.next_task;
        self.dispatch(&mut state);
        Ok(first..last)
    }

    /// Gives pending cells to workers with room, least loaded first.
    fn dispatch(&self, state: &mut State) {
        let max = self.config.max_tasks_per_child;
        while !state.pending.is_empty() {
            let Some(worker) = state
                .workers
                .iter_mut()
                .filter(|w| !w.retiring && w.in_flight.len() < IN_FLIGHT)
                // A worker near its task limit takes only what it may still run.
                .filter(|w| max.is_none_or(|m| w.done + w.in_flight.len() < m))
                .min_by_key(|w| w.in_flight.len())
            else {
                return;
            };
            let Some(task) = state.pending.pop_front() else { return };
            // Written in place in the worker's queue.
            match worker.tasks.write_chunk(1) {
                Ok(mut slot) => {
                    let (first, _) = slot.as_mut_slices();
                    let cell = &mut first[0];
                    let bytes = &task.data[task.bytes.clone()];
                    cell.task = task.task;
                    cell.entry = task.entry;
                    cell.func = task.func;
                    cell.count = task.count;
                    cell.len = bytes.len() as u32;
                    cell.bytes[..bytes.len()].copy_from_slice(bytes);
                    slot.commit_all();
                    worker.in_flight.push(task.task);
                }
                Err(_) => {
                    // Full or gone: it is dead or dying; the next check replaces it.
                    state.pending.push_front(task);
                    worker.retiring = true;
                }
            }
        }
    }

    /// Waits for the next answer on `answers`, collecting for everyone meanwhile if
    /// nobody else does; `None` once `deadline` passed.
    fn wait(&self, answers: &Receiver<Answer>, deadline: Option<Instant>) -> Option<Answer> {
        loop {
            match answers.try_recv() {
                Ok(answer) => return Some(answer),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return None;
            }
            let slice = left.map_or(COLLECT_SLICE, |l| l.min(COLLECT_SLICE));
            match self.collector.try_lock() {
                Ok(mut last_check) => self.collect(slice, &mut last_check),
                Err(_) => {
                    if let Ok(answer) = answers.recv_timeout(slice.min(Duration::from_millis(1))) {
                        return Some(answer);
                    }
                }
            }
        }
    }

    /// One round of the collector's work (the caller holds `collector`, which keeps
    /// `last_check`).
    fn collect(&self, slice: Duration, last_check: &mut Instant) {
        if let Ok(cell) = self.results.pop_timeout(slice) {
            self.deliver(cell);
        }
        self.drain();
        if last_check.elapsed() >= COLLECT_SLICE {
            *last_check = Instant::now();
            self.check_workers();
        }
    }

    fn drain(&self) {
        while let Ok(cell) = self.results.try_pop() {
            self.deliver(cell);
        }
    }

    fn deliver(&self, cell: Cell) {
        let mut state = self.lock();
        let max = self.config.max_tasks_per_child;
        if let Some(worker) = state.workers.iter_mut().find(|w| w.id == cell.worker) {
            worker.in_flight.retain(|&t| t != cell.task);
            worker.done += 1;
            if max.is_some_and(|m| worker.done >= m) {
                worker.retiring = true;
            }
        }
        let route = state.routes.remove(&cell.task);
        self.retire_idle(&mut state);
        self.dispatch(&mut state);
        drop(state);
        // Decoded outside the lock: the workers' next cells went out first.
        if let Some(route) = route {
            route.answer(cell.task, Ok(cell));
        }
    }

    /// Replaces retiring workers that hold nothing any more.
    fn retire_idle(&self, state: &mut State) {
        if state.terminated {
            return;
        }
        let mut i = 0;
        while i < state.workers.len() {
            let w = &state.workers[i];
            if w.retiring && w.in_flight.is_empty() && !state.closed {
                let old = state.workers.swap_remove(i);
                // Dropping its task queue's producer tells it to leave.
                let Worker { child, tasks, .. } = old;
                drop(tasks);
                state.leaving.push(child);
                if let Ok(worker) = self.start_worker(state) {
                    state.workers.push(worker);
                }
                continue;
            }
            i += 1;
        }
        state.leaving.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
    }

    /// Reaps dead workers, fails the tasks they held, starts replacements.
    fn check_workers(&self) {
        // Results a worker pushed before it died are answers, not losses.
        self.drain();
        let mut state = self.lock();
        let mut i = 0;
        while i < state.workers.len() {
            let dead = matches!(state.workers[i].child.try_wait(), Ok(Some(_)));
            if !dead {
                i += 1;
                continue;
            }
            let worker = state.workers.swap_remove(i);
            for task in &worker.in_flight {
                if let Some(route) = state.routes.remove(task) {
                    let error =
                        PoolError::WorkerDied { items: route.items.clone(), pid: worker.pid };
                    route.answer(*task, Err(error));
                }
            }
            let finished = state.terminated || (state.closed && state.pending.is_empty());
            // A failed start is tried again at the next check, with fewer workers now.
            if !finished {
                if let Ok(new) = self.start_worker(&mut state) {
                    state.workers.push(new);
                }
            }
        }
        if !state.terminated && !state.closed && state.workers.len() < self.config.processes {
            if let Ok(new) = self.start_worker(&mut state) {
                state.workers.push(new);
            }
        }
        self.retire_idle(&mut state);
        self.dispatch(&mut state);
    }

    fn terminate(&self) {
        let mut state = self.lock();
        state.terminated = true;
        state.closed = true;
        for w in &mut state.workers {
            let _ = w.child.kill();
        }
        let workers = std::mem::take(&mut state.workers);
        for mut w in workers {
            let _ = w.child.wait();
        }
        for mut c in std::mem::take(&mut state.leaving) {
            let _ = c.kill();
            let _ = c.wait();
        }
        state.pending.clear();
        for (task, route) in state.routes.drain() {
            route.answer(task, Err(PoolError::Closed));
        }
    }
}

/// A call's items, encoded, and how they split into tasks.
struct Packed {
    entry: u64,
    func: u64,
    data: Arc<Vec<u8>>,
    /// Each task's bytes in `data` and items in the call.
    tasks: Vec<(Range<usize>, Range<usize>)>,
}

/// Encodes `items` for `f` and splits them into tasks of `chunk` items at most, each
/// fitting in a cell with its results.
fn pack<A: Transfer + Clone, R: Transfer>(
    f: fn(A) -> R,
    items: &[A],
    chunk: usize,
) -> Result<Packed, PoolError> {
    let runner: ChunkRunner = run_chunk::<A, R>;
    let (entry, func) = (child::offset_of(runner as usize), child::offset_of(child::address(f)));
    // Each item's result must fit too, with its outcome tag in case one panics.
    let mut chunk = match R::MAX_LEN {
        Some(r) => chunk.min(CELL_BYTES / (r + 1)).max(1),
        None => 1,
    };
    let mut data = Vec::new();
    let mut tasks = Vec::new();
    match A::MAX_LEN {
        // Fixed-size items: one copy of them all, then cut by size.
        Some(a) => {
            if let Some(fit) = CELL_BYTES.checked_div(a) {
                chunk = chunk.min(fit).max(1);
            }
            A::encode_all(items, &mut data);
            if data.len() != items.len() * a {
                return Err(PoolError::TooLarge { index: 0 });
            }
            for start in (0..items.len()).step_by(chunk) {
                let end = (start + chunk).min(items.len());
                tasks.push((start * a..end * a, start..end));
            }
        }
        // Variable-size items: one per task.
        None => {
            for (i, item) in items.iter().enumerate() {
                let at = data.len();
                item.encode(&mut data);
                if data.len() - at > CELL_BYTES {
                    return Err(PoolError::TooLarge { index: i });
                }
                tasks.push((at..data.len(), i..i + 1));
            }
        }
    }
    Ok(Packed { entry, func, data: Arc::new(data), tasks })
}

/// What one task's answer holds for its items.
enum Outcomes<R> {
    /// Every item's result.
    AllOk(Vec<R>),
    /// Each item's result or error (some panicked, or the task failed as a whole).
    Mixed(Vec<Result<R, PoolError>>),
}

impl<R> Outcomes<R> {
    fn into_results(self) -> Vec<Result<R, PoolError>> {
        match self {
            Self::AllOk(v) => v.into_iter().map(Ok).collect(),
            Self::Mixed(v) => v,
        }
    }
}

/// [`unpack`] for the call, every item accounted for: a task that failed as a whole
/// fails each of its items alike.
fn decode<R: Transfer>(
    answer: Result<Cell, PoolError>,
    items: &Range<usize>,
) -> Box<dyn std::any::Any + Send> {
    let outcomes = match unpack::<R>(answer, items) {
        Outcomes::Mixed(mut v) => {
            while v.len() < items.len() {
                let again = match v.first() {
                    Some(Err(PoolError::WorkerDied { items, pid })) => {
                        PoolError::WorkerDied { items: items.clone(), pid: *pid }
                    }
                    Some(Err(PoolError::Closed)) => PoolError::Closed,
                    _ => PoolError::TooLarge { index: items.start + v.len() },
                };
                v.push(Err(again));
            }
            Outcomes::Mixed(v)
        }
        all => all,
    };
    Box::new(outcomes)
}

/// The outcomes of a result cell for the items `items`.
fn unpack<R: Transfer>(answer: Result<Cell, PoolError>, items: &Range<usize>) -> Outcomes<R> {
    let cell = match answer {
        Ok(cell) => cell,
        Err(e) => return Outcomes::Mixed(vec![Err(e)]),
    };
    let bytes = &cell.bytes[..(cell.len as usize).min(CELL_BYTES)];
    let too_large = || Outcomes::Mixed(vec![Err(PoolError::TooLarge { index: items.start })]);
    if cell.count as usize != items.len() {
        return too_large();
    }
    match cell.kind {
        DONE_PLAIN => R::decode_all(bytes, items.len()).map_or_else(too_large, Outcomes::AllOk),
        DONE => {
            let mut out = Vec::with_capacity(items.len());
            let mut at = 0;
            for index in items.clone() {
                match bytes.get(at) {
                    Some(&ITEM_OK) => match R::decode(&bytes[at + 1..]) {
                        Some((r, used)) => {
                            at += 1 + used;
                            out.push(Ok(r));
                        }
                        None => {
                            out.push(Err(PoolError::TooLarge { index }));
                            break;
                        }
                    },
                    Some(&ITEM_PANICKED) => {
                        let len = bytes
                            .get(at + 1..at + 3)
                            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]) as usize);
                        let message = bytes
                            .get(at + 3..at + 3 + len)
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        out.push(Err(PoolError::Panicked { index, message: message.into_owned() }));
                        at += 3 + len;
                    }
                    _ => {
                        out.push(Err(PoolError::TooLarge { index }));
                        break;
                    }
                }
            }
            Outcomes::Mixed(out)
        }
        _ => too_large(),
    }
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes)`).
    ///
    /// # Errors
    ///
    /// `Spawn` if a worker could not be started.
    pub fn new(processes: usize) -> Result<Self, PoolError> {
        Self::builder().processes(processes).build()
    }

    /// Options: `processes`, `initializer`, `max_tasks_per_child`, `chunksize`.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes.
    pub fn processes(&self) -> usize {
        self.inner.config.processes
    }

    /// The workers' process ids right now (replacements included).
    pub fn pids(&self) -> Vec<u32> {
        self.inner.lock().workers.iter().map(|w| w.pid).collect()
    }

    fn chunk_for(&self, len: usize) -> usize {
        self.inner
            .config
            .chunksize
            .unwrap_or_else(|| len.div_ceil(4 * self.inner.config.processes).max(1))
    }

    /// `f` applied to every item, in the items' order (Python's `map`).
    ///
    /// # Errors
    ///
    /// The first failure: `WorkerDied`, `Panicked` (the other items still ran), `Closed`,
    /// `TooLarge`.
    pub fn map<A: Transfer + Clone, R: Transfer>(
        &self,
        f: fn(A) -> R,
        items: &[A],
    ) -> Result<Vec<R>, PoolError> {
        let mut stream = self.stream(f, items)?;
        let mut chunks: Vec<Option<Vec<R>>> = (0..stream.ranges.len()).map(|_| None).collect();
        while let Some(answer) = stream.next_chunk(None) {
            let (chunk, outcomes) = answer?;
            chunks[chunk] = Some(match outcomes {
                Outcomes::AllOk(results) => results,
                Outcomes::Mixed(results) => results.into_iter().collect::<Result<_, _>>()?,
            });
        }
        let mut out = Vec::with_capacity(items.len());
        for chunk in chunks {
            out.extend(chunk.ok_or(PoolError::Closed)?);
        }
        Ok(out)
    }

    /// `f` applied to every item, as a lazy iterator in the items' order that yields each
    /// result as soon as it and those before it are in (Python's `imap`).
    ///
    /// # Errors
    ///
    /// `Closed` or `TooLarge` at once; the iterator yields the other errors in place of
    /// the results they concern.
    pub fn imap<A: Transfer + Clone, R: Transfer>(
        &self,
        f: fn(A) -> R,
        items: &[A],
    ) -> Result<Imap<R>, PoolError> {
        Ok(Imap { stream: self.stream(f, items)?, parked: BTreeMap::new(), next: 0 })
    }

    /// `f` applied to every item, as a lazy iterator of `(index, result)` in the order
    /// the results come in (Python's `imap_unordered`).
    ///
    /// # Errors
    ///
    /// As [`imap`](Self::imap).
    pub fn imap_unordered<A: Transfer + Clone, R: Transfer>(
        &self,
        f: fn(A) -> R,
        items: &[A],
    ) -> Result<ImapUnordered<R>, PoolError> {
        Ok(ImapUnordered { stream: self.stream(f, items)?, ready: VecDeque::new() })
    }

    fn stream<A: Transfer + Clone, R: Transfer>(
        &self,
        f: fn(A) -> R,
        items: &[A],
    ) -> Result<Stream<R>, PoolError> {
        let packed = pack(f, items, self.chunk_for(items.len()))?;
        let ranges: Vec<Range<usize>> = packed.tasks.iter().map(|(_, r)| r.clone()).collect();
        let (answer, answers) = channel();
        let tasks = self.inner.submit(packed, &answer, decode::<R>)?;
        Ok(Stream {
            inner: Arc::clone(&self.inner),
            answers,
            tasks,
            ranges,
            left: items.len(),
            _r: std::marker::PhantomData,
        })
    }

    /// `f(arg)` in a worker, waiting for the result (Python's `apply`).
    ///
    /// # Errors
    ///
    /// `WorkerDied`, `Panicked`, `Closed`, `TooLarge`.
    pub fn apply<A: Transfer + Clone, R: Transfer>(
        &self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<R, PoolError> {
        self.apply_async(f, arg)?.get()
    }

    /// `f(arg)` in a worker; the handle gives the result later (Python's
    /// `apply_async`).
    ///
    /// # Errors
    ///
    /// `Closed`, `TooLarge`.
    pub fn apply_async<A: Transfer + Clone, R: Transfer>(
        &self,
        f: fn(A) -> R,
        arg: A,
    ) -> Result<AsyncResult<R>, PoolError> {
        let stream = self.stream(f, std::slice::from_ref(&arg))?;
        Ok(AsyncResult::new(stream))
    }

    /// No more tasks: calls after this fail with `Closed`; those already made finish.
    pub fn close(&self) {
        self.inner.lock().closed = true;
    }

    /// Closes the pool, waits for every task made before to finish, and lets the
    /// workers go.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for reporting workers that would not leave.
    pub fn join(&self) -> Result<(), PoolError> {
        self.close();
        let (_keep, idle) = channel::<Answer>();
        loop {
            {
                let state = self.inner.lock();
                if state.routes.is_empty() || state.terminated {
                    break;
                }
            }
            let _ = self.inner.wait(&idle, Some(Instant::now() + COLLECT_SLICE));
        }
        let mut state = self.inner.lock();
        let workers = std::mem::take(&mut state.workers);
        let leaving = std::mem::take(&mut state.leaving);
        drop(state);
        for w in workers {
            let Worker { mut child, tasks, .. } = w;
            drop(tasks); // the worker sees Disconnected and exits
            let _ = child.wait();
        }
        for mut c in leaving {
            let _ = c.wait();
        }
        Ok(())
    }

    /// Stops every worker now (SIGKILL); calls waiting on tasks get `Closed`.
    pub fn terminate(&self) {
        self.inner.terminate();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.inner.terminate();
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.inner.config.processes)
            .field("pids", &self.pids())
            .finish()
    }
}

/// A call's tasks and the answers coming back.
struct Stream<R> {
    inner: Arc<Inner>,
    answers: Receiver<Answer>,
    tasks: Range<u64>,
    ranges: Vec<Range<usize>>,
    /// Items not yet answered.
    left: usize,
    _r: std::marker::PhantomData<fn() -> R>,
}

impl<R: Transfer> Stream<R> {
    /// The next task's answer: its index in `ranges` and its items' outcomes.
    fn next_chunk(&mut self, deadline: Option<Instant>) -> Option<Result<Chunk<R>, PoolError>> {
        if self.left == 0 {
            return None;
        }
        match self.inner.wait(&self.answers, deadline) {
            Some((task, answer)) => {
                let chunk = (task - self.tasks.start) as usize;
                let items = self.ranges.get(chunk)?.clone();
                self.left = self.left.saturating_sub(items.len());
                let outcomes = match answer.downcast::<Outcomes<R>>() {
                    Ok(outcomes) => *outcomes,
                    Err(_) => {
                        Outcomes::Mixed(vec![Err(PoolError::TooLarge { index: items.start })])
                    }
                };
                Some(Ok((chunk, outcomes)))
            }
            None if deadline.is_some_and(|d| Instant::now() >= d) => Some(Err(PoolError::Timeout)),
            None => {
                self.left = 0;
                Some(Err(PoolError::Closed))
            }
        }
    }
}

/// The results of [`Pool::imap`], in the items' order.
pub struct Imap<R> {
    stream: Stream<R>,
    parked: BTreeMap<usize, std::vec::IntoIter<Result<R, PoolError>>>,
    next: usize,
}

impl<R: Transfer> Iterator for Imap<R> {
    type Item = Result<R, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(outcomes) = self.parked.get_mut(&self.next) {
                if let Some(outcome) = outcomes.next() {
                    return Some(outcome);
                }
                self.parked.remove(&self.next);
                self.next += 1;
                continue;
            }
            if self.next >= self.stream.ranges.len() {
                return None;
            }
            match self.stream.next_chunk(None)? {
                Ok((chunk, outcomes)) => {
                    self.parked.insert(chunk, outcomes.into_results().into_iter());
                }
                Err(e) => {
                    self.next = self.stream.ranges.len();
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The results of [`Pool::imap_unordered`]: `(index, result)` as they come in.
pub struct ImapUnordered<R> {
    stream: Stream<R>,
    ready: VecDeque<(usize, Result<R, PoolError>)>,
}

impl<R: Transfer> Iterator for ImapUnordered<R> {
    type Item = Result<(usize, R), PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((index, outcome)) = self.ready.pop_front() {
                return Some(outcome.map(|r| (index, r)));
            }
            match self.stream.next_chunk(None)? {
                Ok((chunk, outcomes)) => {
                    let start = self.stream.ranges[chunk].start;
                    let outcomes = outcomes.into_results().into_iter().enumerate();
                    self.ready.extend(outcomes.map(|(i, o)| (start + i, o)));
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The result of [`Pool::apply_async`], to collect later.
pub struct AsyncResult<R> {
    /// The call's answers and the result once in: behind a cell, so that `ready` and
    /// `get_timeout` take `&self` as Python's do.
    state: std::cell::RefCell<Awaited<R>>,
}

/// An [`AsyncResult`]'s answers and its result once in.
type Awaited<R> = (Stream<R>, Option<Result<R, PoolError>>);

impl<R: Transfer> AsyncResult<R> {
    fn new(stream: Stream<R>) -> Self {
        Self { state: std::cell::RefCell::new((stream, None)) }
    }

    /// Fetches the answer if it comes by `deadline`; whether it is in.
    fn fetch(&self, deadline: Option<Instant>) -> bool {
        let mut state = self.state.borrow_mut();
        let (stream, value) = &mut *state;
        if value.is_none() {
            match stream.next_chunk(deadline) {
                Some(Ok((_, outcomes))) => *value = outcomes.into_results().pop(),
                Some(Err(PoolError::Timeout)) | None => {}
                Some(Err(e)) => *value = Some(Err(e)),
            }
        }
        value.is_some()
    }

    /// Whether the result is in (without waiting for it).
    pub fn ready(&self) -> bool {
        self.fetch(Some(Instant::now()))
    }

    /// Waits for the result.
    ///
    /// # Errors
    ///
    /// `WorkerDied`, `Panicked`, `Closed`.
    pub fn get(self) -> Result<R, PoolError> {
        self.fetch(None);
        self.state.into_inner().1.unwrap_or(Err(PoolError::Closed))
    }

    /// Waits at most `timeout` for the result and hands it over (a later `get` then
    /// says `Closed`).
    ///
    /// # Errors
    ///
    /// `Timeout` (the task goes on: call again), and those of [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, PoolError> {
        self.fetch(Some(Instant::now() + timeout));
        self.state.borrow_mut().1.take().unwrap_or(Err(PoolError::Timeout))
    }
}

impl<R> fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ready = self.state.try_borrow().map(|s| s.1.is_some()).unwrap_or(false);
        f.debug_struct("AsyncResult").field("ready", &ready).finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for Imap<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Imap").field("next", &self.next).finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for ImapUnordered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapUnordered").finish_non_exhaustive()
    }
}
