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
#![no_main]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmsync::{Connection, Options, Pipe, RecvError, SendError};

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

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("p{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut a = Pipe::create_with(&name, CAPACITY, &opts).unwrap();
    let mut b = Pipe::open_with(&name, &opts).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dir().join(&name)).unwrap();
    Pipe::unlink_with(&name, &opts).unwrap();
    // SAFETY: a second shared mapping of the pipe's file; only this thread writes it.
    let mut peer = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let ring = a.capacity();
    let (mut to_b, mut to_a) = (Model::default(), Model::default());
    let mut trusted = true;

    for op in data.chunks_exact(3) {
        let (code, x, y) = (op[0], usize::from(op[1]), op[2]);
        let (tx, rx, model) = if code & 1 == 0 {
            (&mut a, &mut b, &mut to_b)
        } else {
            (&mut b, &mut a, &mut to_a)
        };
        let len = x % (tx.max_message() + 3);
        match (code >> 1) % 10 {
            0 | 1 => send(tx, model, message(len, y), false, trusted),
            2 => send(tx, model, message(len, y), true, trusted),
            3 | 4 => try_recv(rx, model, trusted),
            // The blocking forms only where the model says they return at once.
            5 if trusted => recv_into(rx, model),
            6 if trusted => read(rx, model, x % 80 + 1),
            7 if trusted => write(tx, model, x % 80, y),
            5..=7 => {}
            8 => {
                let ready = rx.poll(Duration::ZERO);
                if trusted {
                    assert_eq!(ready, !model.messages.is_empty());
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
});
