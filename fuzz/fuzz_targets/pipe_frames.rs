//! Arbitrary sequences of pipe operations, checked against a `VecDeque<Vec<u8>>` model per
//! direction, then hostile writes into the rings.
//!
//! Input: triples of bytes `(op, a, b)`. The operation picks a direction (A to B or B to
//! A) and one of: `send` of any length from 0 to past `max_message`, `send_with`, an
//! `io::Write` of part of a buffer, `try_recv`, `recv_into`, an `io::Read` of any size,
//! `poll`. Both ends live in this process on one small pipe (fresh per input), so every
//! wrap, skip marker and partial read is reachable. Until the first hostile write every
//! result must match the model exactly; a hostile write (a word into a ring's data or
//! positions, through a second mapping of the file) ends the model, and from then on
//! nothing may panic, hang or read out of bounds.
//!
//! Deaths are fuzzed too, in the model: an end is dropped and taken up again
//! (`Pipe::open_end`), the receiving end with or without `discard_stale`, and the sending
//! end after its last frame's `tail` store is undone (the state of a writer killed
//! between publishing a header and storing `tail`, which the reader may already have
//! consumed). The model must hold across every re-attachment: nothing lost, nothing
//! delivered twice.
#![no_main]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmsync::{Connection, End, Options, Pipe, RecvError, SendError};

#[path = "shared/scratch.rs"]
mod scratch;

fn dir() -> &'static std::path::Path {
    scratch::dir("pipe")
}

/// Where the payload starts in the file: after the 128-byte segment header.
const PAYLOAD: usize = 128;
/// The pipe's control block: the two rings' positions (256 bytes each), the two ends'
/// sides and the mode.
const CONTROL: usize = 896;
/// Capacity asked for: rings of 128 bytes, messages of up to 56.
const CAPACITY: usize = 64;

/// One direction's expected contents: whole messages, and how much of the oldest one
/// `io::Read` has taken.
#[derive(Default)]
struct Model {
    messages: VecDeque<Vec<u8>>,
    partial: usize,
}

impl Model {
    fn bytes_waiting(&self) -> usize {
        self.messages.iter().map(Vec::len).sum::<usize>() - self.partial
    }
}

fn message(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|k| seed.wrapping_add(k as u8)).collect()
}

/// Sends `msg` without waiting; checks the outcome against the model.
fn send(tx: &mut Connection, model: &mut Model, msg: Vec<u8>, in_place: bool, trusted: bool) {
    let max = tx.max_message();
    let result = if in_place {
        tx.send_with_timeout(msg.len(), Duration::ZERO, |buf| buf.copy_from_slice(&msg))
    } else {
        tx.send_timeout(&msg, Duration::ZERO)
    };
    if !trusted {
        return;
    }
    match result {
        Ok(()) => {
            assert!(msg.len() <= max);
            model.messages.push_back(msg);
        }
        Err(SendError::TooLarge) => assert!(msg.len() > max),
        Err(SendError::Timeout) => {
            assert!(msg.len() <= max);
            assert!(!model.messages.is_empty(), "an empty ring refused a message that fits");
        }
        Err(e) => panic!("send: {e}"),
    }
}

fn try_recv(rx: &mut Connection, model: &mut Model, trusted: bool) {
    let got = rx.try_recv().map(|m| m.to_vec());
    if !trusted {
        return;
    }
    match got {
        Ok(bytes) => {
            let front = model.messages.pop_front().expect("a message the model does not have");
            assert_eq!(bytes, front[model.partial..]);
            model.partial = 0;
        }
        Err(RecvError::Empty) => assert!(model.messages.is_empty()),
        Err(e) => panic!("try_recv: {e}"),
    }
}

fn recv_into(rx: &mut Connection, model: &mut Model) {
    // Blocks if nothing is waiting (both ends are ours): skip it then.
    if model.messages.is_empty() {
        return;
    }
    let mut buf = vec![1, 2, 3];
    let got = rx.recv_into(&mut buf);
    let front = model.messages.pop_front().unwrap();
    assert_eq!(got, Ok(front.len() - model.partial));
    assert_eq!(buf, front[model.partial..]);
    model.partial = 0;
}

/// `io::Read` of `n` bytes: takes what is waiting, across messages.
fn read(rx: &mut Connection, model: &mut Model, n: usize) {
    if model.bytes_waiting() == 0 {
        // It would block (or, with only empty messages waiting, wait for a byte).
        return;
    }
    let mut buf = vec![0; n];
    let got = rx.read(&mut buf).unwrap();
    let mut want = Vec::new();
    while want.len() < n {
        let Some(front) = model.messages.front() else { break };
        let take = (front.len() - model.partial).min(n - want.len());
        want.extend_from_slice(&front[model.partial..model.partial + take]);
        model.partial += take;
        if model.partial == front.len() {
            model.messages.pop_front();
            model.partial = 0;
        }
    }
    assert_eq!(&buf[..got], want.as_slice());
}

/// `io::Write` of a buffer of `n` bytes into an empty ring (a full one would block).
fn write(tx: &mut Connection, model: &mut Model, n: usize, seed: u8) {
    if !model.messages.is_empty() || n == 0 {
        return;
    }
    let buf = message(n, seed);
    let took = tx.write(&buf).unwrap();
    assert!(took >= 1 && took <= n.min(tx.max_message()), "took {took} of {n}");
    model.messages.push_back(buf[..took].to_vec());
}

/// Where the `tail` of the ring towards `end` is, in the file.
fn tail_at(towards: End) -> usize {
    PAYLOAD + if towards == End::A { 128 } else { 384 }
}

fn read_word(map: &memmap2::MmapMut, at: usize) -> u64 {
    u64::from_ne_bytes(map[at..at + 8].try_into().unwrap())
}

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("p{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let a = Pipe::create_with(&name, CAPACITY, &opts).unwrap();
    let b = Pipe::open_with(&name, &opts).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dir().join(&name)).unwrap();
    // SAFETY: a second shared mapping of the pipe's file; only this thread writes it.
    let mut peer = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let ring = a.capacity();
    let mut ends = [a, b];
    let mut models = [Model::default(), Model::default()]; // towards B, towards A
    // Per direction: `tail` before the last successful send, while it is the last frame.
    let mut rewind: [Option<u64>; 2] = [None, None];
    let mut trusted = true;

    for op in data.chunks_exact(3) {
        let (code, x, y) = (op[0], usize::from(op[1]), op[2]);
        // Direction 0: A sends to B; direction 1: B sends to A.
        let dir = usize::from(code & 1);
        let (sender, receiver) = if dir == 0 { (End::A, End::B) } else { (End::B, End::A) };
        let [ea, eb] = &mut ends;
        let (tx, rx) = if dir == 0 { (ea, eb) } else { (eb, ea) };
        let model = &mut models[dir];
        let len = x % (tx.max_message() + 3);
        match (code >> 1) % 13 {
            0 | 1 | 2 => {
                let before = read_word(&peer, tail_at(receiver));
                let queued = model.messages.len();
                send(tx, model, message(len, y), code & 2 != 0, trusted);
                rewind[dir] = (model.messages.len() > queued).then_some(before);
            }
            3 | 4 => try_recv(rx, model, trusted),
            // The blocking forms only where the model says they return at once.
            5 if trusted => recv_into(rx, model),
            6 if trusted => read(rx, model, x % 80 + 1),
            7 if trusted => {
                rewind[dir] = None;
                write(tx, model, x % 80, y);
            }
            5..=7 => {}
            8 => {
                let ready = rx.poll(Duration::ZERO);
                if trusted {
                    assert_eq!(ready, !model.messages.is_empty());
                }
            }
            9 => {
                // The sender dies after publishing its last frame, before `tail`; a new
                // process takes up its end.
                if let Some(before) = rewind[dir].take().filter(|_| trusted) {
                    peer[tail_at(receiver)..][..8].copy_from_slice(&before.to_ne_bytes());
                }
                let slot = if sender == End::A { 0 } else { 1 };
                drop(std::mem::replace(&mut ends[slot], placeholder(&opts)));
                ends[slot] = reopen(&name, sender, &opts, trusted);
                // The end also received the other direction: a partly read message there
                // is received whole by the new process.
                models[1 - dir].partial = 0;
            }
            10 | 11 => {
                // The receiver dies; a new process takes up its end, and with op 11 drops
                // what was sent to its predecessor.
                let slot = if receiver == End::A { 0 } else { 1 };
                drop(std::mem::replace(&mut ends[slot], placeholder(&opts)));
                ends[slot] = reopen(&name, receiver, &opts, trusted);
                models[dir].partial = 0;
                if (code >> 1) % 13 == 11 {
                    let dropped = ends[slot].discard_stale();
                    if trusted {
                        assert_eq!(dropped, Ok(models[dir].messages.len()));
                        models[dir].messages.clear();
                    }
                }
            }
            _ => {
                // A hostile write: a word into one ring's data or positions.
                trusted = false;
                let word = u64::from(y).wrapping_mul(0x0101_0101_0101_0101) >> (x % 64);
                let at = if code & 2 == 0 {
                    PAYLOAD + CONTROL + (x * 8) % (2 * ring)
                } else {
                    // `head` or `tail` of either ring (each on its own 128-byte half).
                    PAYLOAD + (x % 4) * 128
                };
                peer[at..at + 8].copy_from_slice(&word.to_ne_bytes());
            }
        }
    }
    drop(ends);
    Pipe::unlink_with(&name, &opts).unwrap();
});

/// A connection to stand in a slot while its end is re-opened: an end of a pipe of its
/// own.
fn placeholder(opts: &Options) -> Connection {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!("q{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let conn = Pipe::create_with(&name, CAPACITY, opts).unwrap();
    Pipe::unlink_with(&name, opts).unwrap();
    conn
}

/// Takes up `end` of `name` again; it must succeed unless hostile writes came first.
fn reopen(name: &str, end: End, opts: &Options, trusted: bool) -> Connection {
    match Pipe::open_end_with(name, end, opts) {
        Ok(conn) => conn,
        Err(e) => {
            assert!(!trusted, "end {end:?} could not be taken up again: {e}");
            placeholder(opts)
        }
    }
}
