//! A tokio program consuming a queue that another process feeds, next to a tokio timer:
//! `pop_async` sleeps in shmsync's waiter thread, not in the runtime, and the runtime's
//! other tasks keep running. Works the same with any executor (no tokio in shmsync).
//!
//! Run: `cargo run --example async_consumer`.

#[path = "support/proc.rs"]
mod proc;

use std::time::Duration;

use shmsync::{PopError, spsc};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if proc::role().as_deref() == Some("sensor") {
        let mut tx = spsc::Producer::<f64>::open(&proc::arg("QUEUE"))?;
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(5));
            tx.push(20.0 + f64::from(i) / 10.0)?;
        }
        return Ok(());
    }
    let name = proc::name("readings");
    let mut rx = spsc::Consumer::<f64>::create(&name, 16)?;
    let sensor = proc::start("sensor", &[("QUEUE", &name)]);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let (readings, ticks) = runtime.block_on(async move {
        // The consumer: awaits each reading; ends when the sensor process is gone.
        let consumer = tokio::spawn(async move {
            let mut readings = Vec::new();
            loop {
                match rx.pop_async().await {
                    Ok(celsius) => readings.push(celsius),
                    Err(PopError::Disconnected) => return readings,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        // A timer on the same single-threaded runtime, ticking meanwhile.
        let ticker = tokio::spawn(async {
            let mut interval = tokio::time::interval(Duration::from_millis(10));
            let mut ticks = 0;
            loop {
                interval.tick().await;
                ticks += 1;
                if ticks == 5 {
                    return ticks;
                }
            }
        });
        let readings = tokio::time::timeout(Duration::from_secs(30), consumer).await;
        (readings.expect("the sensor stalled").expect("the consumer panicked"), ticker.await)
    });
    proc::join(sensor);
    println!("got {} readings, from {:.1} to {:.1} C", readings.len(), readings[0], readings[19]);
    println!("the timer ticked {} times meanwhile, on the same thread", ticks?);
    assert_eq!(readings.len(), 20);
    spsc::Consumer::<f64>::unlink(&name)?;
    Ok(())
}
