//! The waiter thread behind the async calls (feature `async`): one per process, asleep in
//! one `futex_waitv` on every word an awaiting call registered, waking their `Waker`s.
//!
//! An async call first tries its operation (an item already there: done, no syscall),
//! then spins briefly as the blocking calls do, then awaits a [`Waits::next`]: the future
//! announces the sleep on its object exactly as a [`WaitSet`](crate::WaitSet) entry does
//! (flag raised, word read, one heavy fence, one more look), registers the words with the
//! waiter thread and returns `Pending`. The thread sleeps on its own wake word plus every
//! registered word; when a word is woken or no longer holds the value announced (or the
//! object looks ready, or, every slice, ready on a closer look), it wakes that future's
//! `Waker`, which makes the call try again. A registration bumps the thread's wake word
//! so that it re-arms with the current set; a cancelled registration is simply dropped
//! (the thread may sleep on its words until its next wake-up, harmlessly).
//!
//! Cancel safety: the future only waits; the operation is one `try_*` call made in a
//! single poll. Dropping the future at any await point loses nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::loom::{AtomicU32, Ordering};
use crate::rings::wait::spin_until;
use crate::wake::fence;
use crate::wake::futex::{self, Deadline};
use crate::wake::many::Source;

/// How long the thread sleeps at most: the bound on noticing an MPMC queue's last other
/// handle gone (its closer look), and a net under hostile peers.
const SLICE: Duration = Duration::from_millis(20);
/// The sleep when the registered words do not all fit one `futex_waitv`: the others are
/// then looked at this often.
const SHORT_SLICE: Duration = Duration::from_millis(1);
/// Words per `futex_waitv`, the thread's own wake word included.
const MAX_WORDS: usize = 128;

/// One awaiting call.
struct Registration {
    /// Keeps the object's mapping alive while the thread looks at its words.
    source: Arc<dyn Source>,
    /// The words to sleep on and the values announced.
    words: Vec<(*const AtomicU32, u32)>,
    waker: Waker,
    /// The thread found it ready and woke it; the future completes on its next poll.
    fired: bool,
}

// SAFETY: the word pointers lead into the mapping that `source` keeps alive; the
// registration is only touched under the registry's lock.
unsafe impl Send for Registration {}

impl Registration {
    /// Whether any word no longer holds the value announced.
    fn changed(&self) -> bool {
        // SAFETY: the words are in the mapping `source` keeps alive.
        self.words.iter().any(|&(w, v)| unsafe { &*w }.load(Ordering::Acquire) != v)
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    waiting: HashMap<u64, Registration>,
}

/// The state one waiter thread shares with the futures.
struct Reactor {
    registry: Mutex<Registry>,
    /// Bumped and woken when the registrations change, so that the thread re-arms.
    rearm: AtomicU32,
}

impl Reactor {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the map half-changed (each
        // critical section is one insert, remove or flag): go on with it.
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn poke(&self) {
        self.rearm.fetch_add(1, Ordering::Release);
        futex::wake_one(&self.rearm);
    }

    /// The thread's loop: sleep on every registered word, wake what is ready, forever.
    fn run(&self) {
        let mut last_close_look = Instant::now();
        loop {
            drop(self.sleep_on_registered());
            let close_look = last_close_look.elapsed() >= SLICE;
            if close_look {
                last_close_look = Instant::now();
            }
            let mut wake = Vec::new();
            for reg in self.registry().waiting.values_mut().filter(|r| !r.fired) {
                if reg.changed()
                    || reg.source.is_ready()
                    || (close_look && reg.source.is_ready_closely())
                {
                    reg.fired = true;
                    reg.source.done();
                    wake.push(reg.waker.clone());
                }
            }
            // Outside the lock: a waker may run its executor's code.
            wake.into_iter().for_each(Waker::wake);
        }
    }

    /// One sleep on the thread's wake word and every registered word. Returns the sources
    /// slept on, kept alive until the sleep is over.
    fn sleep_on_registered(&self) -> Vec<Arc<dyn Source>> {
        let rearm_seen = self.rearm.load(Ordering::Acquire);
        let mut keep = Vec::new();
        let mut addresses = vec![(&self.rearm as *const AtomicU32, rearm_seen)];
        let mut all_fit = true;
        for reg in self.registry().waiting.values().filter(|r| !r.fired) {
            if addresses.len() + reg.words.len() > MAX_WORDS {
                all_fit = false;
                continue;
            }
            keep.push(Arc::clone(&reg.source));
            addresses.extend(&reg.words);
        }
        // SAFETY: each word is in a mapping that `keep` holds alive (or is `rearm`, in
        // the reactor, which lives for good) until after the sleep.
        let words: Vec<(&AtomicU32, u32)> =
            addresses.iter().map(|&(w, v)| (unsafe { &*w }, v)).collect();
        let slice = if all_fit { SLICE } else { SHORT_SLICE };
        let _ = futex::wait_any(&words, &Deadline::after(slice));
        keep
    }
}

/// This process's reactor, started on first use (and again in a forked child, which has
/// the memory but not the thread).
fn reactor() -> Arc<Reactor> {
    static CURRENT: Mutex<Option<(u32, Arc<Reactor>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut current = CURRENT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((owner, reactor)) = current.as_ref() {
        if *owner == pid {
            return Arc::clone(reactor);
        }
    }
    let reactor =
        Arc::new(Reactor { registry: Mutex::new(Registry::default()), rearm: AtomicU32::new(0) });
    let thread = Arc::clone(&reactor);
    std::thread::Builder::new()
        .name("shmsync-waiter".into())
        .spawn(move || thread.run())
        .expect("shmsync: cannot start the async waiter thread");
    *current = Some((pid, Arc::clone(&reactor)));
    reactor
}

/// The waits of one async call, each until its object may be ready; the call then tries
/// its operation again (readiness is a hint; the call decides).
///
/// The first wait may complete at once (the object looks ready after a short spin).
/// Every later one first yields to the executor: a call whose object looks ready while
/// the call finds nothing (another consumer took the value, or a hostile peer wrote
/// positions that make the look and the call disagree) then still returns `Pending`
/// between tries, instead of looping inside one poll for good.
pub(crate) struct Waits {
    again: bool,
}

impl Waits {
    pub(crate) fn new() -> Self {
        Self { again: false }
    }

    /// The next wait, on `source`.
    pub(crate) fn next(&mut self, source: Box<dyn Source>) -> Ready {
        let ready = Ready { source: Arc::from(source), registered: None, yield_first: self.again };
        self.again = true;
        ready
    }
}

/// One wait of [`Waits`].
pub(crate) struct Ready {
    source: Arc<dyn Source>,
    /// The reactor and the id of this future's registration, once registered.
    registered: Option<(Arc<Reactor>, u64)>,
    /// Return `Pending` once (waking itself) before looking: see [`Waits`].
    yield_first: bool,
}

impl Future for Ready {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if let Some((reactor, id)) = &self.registered {
            let mut registry = reactor.registry();
            return match registry.waiting.get_mut(id) {
                Some(reg) if !reg.fired => {
                    if !reg.waker.will_wake(cx.waker()) {
                        reg.waker = cx.waker().clone();
                    }
                    Poll::Pending
                }
                _ => {
                    registry.waiting.remove(id);
                    drop(registry);
                    self.registered = None;
                    Poll::Ready(())
                }
            };
        }
        if self.yield_first {
            self.yield_first = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let source = Arc::clone(&self.source);
        if spin_until(&mut || source.is_ready()) || source.is_ready_closely() {
            return Poll::Ready(());
        }
        // Announce, fence, look again: the hand-off of a wait set's sleep, with the
        // sleep itself done by the reactor thread.
        let announced = source.announce();
        let mut words = vec![(announced.wake.0 as *const AtomicU32, announced.wake.1)];
        words.extend(announced.death.map(|(w, v)| (w as *const AtomicU32, v)));
        fence::heavy();
        if source.is_ready() {
            source.done();
            return Poll::Ready(());
        }
        let reactor = reactor();
        let id = {
            let mut registry = reactor.registry();
            let id = registry.next_id;
            registry.next_id += 1;
            let reg = Registration {
                source: Arc::clone(&source),
                words,
                waker: cx.waker().clone(),
                fired: false,
            };
            registry.waiting.insert(id, reg);
            id
        };
        reactor.poke();
        self.registered = Some((reactor, id));
        Poll::Pending
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        if let Some((reactor, id)) = self.registered.take() {
            let removed = reactor.registry().waiting.remove(&id);
            if let Some(reg) = removed {
                if !reg.fired {
                    reg.source.done();
                }
            }
        }
    }
}

impl std::fmt::Debug for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ready").field("registered", &self.registered.is_some()).finish()
    }
}
