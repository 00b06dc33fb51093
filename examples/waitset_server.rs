//! One server thread serving two queues and a pipe at once with a `WaitSet`, as Python's
//! `multiprocessing.connection.wait` serves several connections.
//!
//! Three client processes: one pushes orders, one pushes cancellations (two SPSC queues),
//! one asks questions through a pipe and waits for each answer. The server sleeps in one
//! `futex_waitv` until any of them has something, serves what is ready, and removes each
//! entry once its client is gone (`Disconnected`). Run: `cargo run --example waitset_server`.

#[path = "support/proc.rs"]
mod proc;

use std::time::Duration;

use shmsync::{Pipe, PopError, RecvError, WaitSet, spsc};

fn client(role: &str) -> Result<(), Box<dyn std::error::Error>> {
    match role {
        "orders" => {
            let mut tx = spsc::Producer::<u64>::open(&proc::arg("ORDERS"))?;
            for id in 1..=5 {
                std::thread::sleep(Duration::from_millis(3));
                tx.push(100 + id)?;
            }
        }
        "cancels" => {
            let mut tx = spsc::Producer::<u64>::open(&proc::arg("CANCELS"))?;
            for id in [102, 104] {
                std::thread::sleep(Duration::from_millis(7));
                tx.push(id)?;
            }
        }
        _ => {
            let mut conn = Pipe::open(&proc::arg("PIPE"))?;
            for question in ["how many orders?", "is 104 cancelled?", "bye"] {
                conn.send(question.as_bytes())?;
                let answer = conn.recv()?;
                println!("asker got: {}", String::from_utf8_lossy(&answer));
            }
        }
    }
    Ok(()) // leaving: the server sees Disconnected on this client's entry
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(role) = proc::role() {
        return client(&role);
    }
    let (orders_name, cancels_name, pipe_name) =
        (proc::name("orders"), proc::name("cancels"), proc::name("questions"));
    let mut orders = spsc::Consumer::<u64>::create(&orders_name, 8)?;
    let mut cancels = spsc::Consumer::<u64>::create(&cancels_name, 8)?;
    let mut conn = Pipe::create(&pipe_name, 1024)?;

    let mut set = WaitSet::new();
    let orders_key = set.add_pop(&orders)?;
    let cancels_key = set.add_pop(&cancels)?;
    let questions_key = set.add_recv(&conn)?;

    let clients = [
        proc::start("orders", &[("ORDERS", &orders_name)]),
        proc::start("cancels", &[("CANCELS", &cancels_name)]),
        proc::start("asker", &[("PIPE", &pipe_name)]),
    ];
    let (mut taken, mut cancelled) = (Vec::new(), Vec::new());
    let mut wake_ups = 0;
    while !set.is_empty() {
        // Every entry ready now; a client that never comes would be caught by the timeout.
        let ready = set.wait_timeout(Duration::from_secs(30))?.to_vec();
        wake_ups += 1;
        for key in ready {
            if key == orders_key {
                match orders.try_pop() {
                    Ok(id) => taken.push(id),
                    Err(PopError::Disconnected) => assert!(set.remove(key)),
                    Err(e) => return Err(e.into()),
                }
            } else if key == cancels_key {
                match cancels.try_pop() {
                    Ok(id) => cancelled.push(id),
                    Err(PopError::Disconnected) => assert!(set.remove(key)),
                    Err(e) => return Err(e.into()),
                }
            } else if key == questions_key {
                let question = match conn.try_recv() {
                    Ok(msg) => String::from_utf8_lossy(&msg).into_owned(),
                    Err(RecvError::Disconnected) => {
                        assert!(set.remove(key));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                let answer = match question.as_str() {
                    "how many orders?" => format!("{} so far", taken.len()),
                    "is 104 cancelled?" => format!("{}", cancelled.contains(&104)),
                    _ => "goodbye".to_owned(),
                };
                conn.send(answer.as_bytes())?;
            }
        }
    }
    for c in clients {
        proc::join(c);
    }
    println!("orders: {taken:?}");
    println!("cancelled: {cancelled:?}");
    println!("all three clients gone after {wake_ups} wake-ups of one server thread");
    assert_eq!(taken, [101, 102, 103, 104, 105]);
    assert_eq!(cancelled, [102, 104]);
    drop((orders, cancels, conn));
    spsc::Consumer::<u64>::unlink(&orders_name)?;
    spsc::Consumer::<u64>::unlink(&cancels_name)?;
    Pipe::unlink(&pipe_name)?;
    Ok(())
}
