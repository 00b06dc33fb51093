//! Reads ticks that `writer`, another crate, sends; or checks that a queue of a changed
//! `Tick` is refused. Started by `writer`.

use std::time::Duration;

use shmsync::{LayoutProperty, OpenError, spsc};

/// This crate's own declaration of the writer's struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, shmsync::Pod, shmsync::Zeroable)]
struct Tick {
    seq: u64,
    price: f64,
}

const BOUND: Duration = Duration::from_secs(20);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("read") => {
            let (name, count): (&str, u64) = (&args[2], args[3].parse()?);
            let mut rx = spsc::Consumer::<Tick>::open(name)?;
            for seq in 0..count {
                let tick = rx.pop_timeout(BOUND).map_err(|e| format!("pop {seq}: {e}"))?;
                if tick.seq != seq || tick.price != seq as f64 * 0.5 {
                    return Err(format!("tick {seq} arrived as {tick:?}").into());
                }
            }
            println!("reader: {count} ticks in order");
            Ok(())
        }
        Some("refuse") => match spsc::Consumer::<Tick>::open(&args[2]) {
            Err(err @ OpenError::LayoutMismatch { property: LayoutProperty::TypeTag, .. }) => {
                let text = err.to_string();
                if !text.contains(&args[2]) || !text.contains("type tag") {
                    return Err(format!("the message does not explain itself: {text}").into());
                }
                println!("reader: refused as it should: {text}");
                Ok(())
            }
            Err(other) => {
                Err(format!("expected LayoutMismatch on the type tag, got {other}").into())
            }
            Ok(_) => Err("a queue of a changed Tick opened".into()),
        },
        Some("dict") => {
            let dict = shmsync::Dict::<shmsync::FixedStr<16>, u64>::open(&args[2])?;
            for key in ["alice", "bob", "carol"] {
                if !dict.update(&shmsync::FixedStr::new(key)?, |v| *v += 10) {
                    return Err(format!("{key} is missing").into());
                }
            }
            dict.insert(shmsync::FixedStr::new("dave")?, 99)?;
            dict.check()?;
            println!("reader: updated the dict");
            Ok(())
        }
        _ => Err("usage: reader read NAME COUNT | reader refuse NAME | reader dict NAME".into()),
    }
}
