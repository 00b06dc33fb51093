//! A producer and a consumer over a `Pipe`, ending as Python's `recv()` ends with
//! `EOFError`: the consumer gets every message the producer sent, then `Disconnected`.
//!
//! The consumer creates the pipe and starts the producer, which sends numbered lines
//! (written in place with `send_with`) and leaves. Run:
//! `cargo run --example pipe_producer_consumer`.

#[path = "support/proc.rs"]
mod proc;

use shmsync::{Pipe, RecvError};

const LINES: usize = 100;

fn line(k: usize) -> String {
    format!("line {k}: {}", "*".repeat(k % 40))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if proc::role().as_deref() == Some("producer") {
        let mut conn = Pipe::open(&proc::arg("PIPE"))?;
        for k in 0..LINES {
            let text = line(k);
            conn.send_with(text.len(), |buf| buf.copy_from_slice(text.as_bytes()))?;
        }
        // Also tell the consumer how many were sent, then leave (dropping the end).
        conn.send(&(LINES as u64).to_le_bytes())?;
        return Ok(());
    }
    let pipe = proc::name("lines");
    let mut conn = Pipe::create(&pipe, 1024)?; // small: the producer waits for room
    let producer = proc::start("producer", &[("PIPE", &pipe)]);
    let mut received = Vec::new();
    let ended = loop {
        match conn.recv() {
            Ok(msg) => received.push(msg.to_vec()),
            Err(e) => break e,
        }
    };
    proc::join(producer);
    assert_eq!(ended, RecvError::Disconnected, "the stream ended otherwise");
    let count = received.pop().expect("the count");
    assert_eq!(count, (LINES as u64).to_le_bytes());
    for (k, msg) in received.iter().enumerate() {
        assert_eq!(msg, line(k).as_bytes(), "message {k}");
    }
    println!(
        "received {} lines, the last: {:?}",
        received.len(),
        String::from_utf8_lossy(&received[LINES - 1])
    );
    println!("then Disconnected: the producer is gone and everything it sent was read");
    Pipe::unlink(&pipe)?;
    Ok(())
}
