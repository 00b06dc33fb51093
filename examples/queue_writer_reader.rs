//! A writer process and a reader process over a queue, as Python's
//! `Queue.put`/`Queue.get` between two `Process`es.
//!
//! The reader creates an SPSC queue of `Reading`s and starts the writer; the writer puts
//! ten readings and leaves; the reader gets them in order, then `Disconnected`.
//! Run: `cargo run --example queue_writer_reader`.

#[path = "support/proc.rs"]
mod proc;

use shmsync::{PopError, spsc};

/// One message: plain data, copied into the ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, shmsync::Pod, shmsync::Zeroable)]
struct Reading {
    seq: u32,
    sensor: u32,
    celsius: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if proc::role().as_deref() == Some("writer") {
        let mut tx = spsc::Producer::<Reading>::open(&proc::arg("QUEUE"))?;
        for seq in 0..10 {
            tx.push(Reading { seq, sensor: seq % 3, celsius: 20.0 + f64::from(seq) / 4.0 })?;
        }
        return Ok(()); // dropping the producer tells the reader nothing more will come
    }
    let queue = proc::name("readings");
    let mut rx = spsc::Consumer::<Reading>::create(&queue, 4)?; // small: the writer waits
    let writer = proc::start("writer", &[("QUEUE", &queue)]);
    let mut expected = 0;
    let ended = loop {
        match rx.pop() {
            Ok(r) => {
                assert_eq!(r.seq, expected, "in order");
                println!("got reading {} from sensor {}: {:.2} C", r.seq, r.sensor, r.celsius);
                expected += 1;
            }
            Err(e) => break e,
        }
    };
    proc::join(writer);
    assert_eq!(ended, PopError::Disconnected, "the stream ended otherwise");
    assert_eq!(expected, 10);
    println!("the writer is done: Disconnected after {expected} readings");
    spsc::Consumer::<Reading>::unlink(&queue)?;
    Ok(())
}
