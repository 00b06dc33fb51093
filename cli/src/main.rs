//! `shmsync`: see, inspect and clean up shmsync's shared-memory objects.
//!
//! ```text
//! shmsync ls [--dir D] [--json]       every object: kind, size, capacity, length, attachers, age
//! shmsync inspect NAME [--dir D] [--json]   the header and state words, decoded
//! shmsync rm NAME... [--dir D]        unlink objects (refuses files that are not shmsync's)
//! shmsync gc [--dry-run] [--dir D]    unlink the objects no live process holds
//! ```
//!
//! Exit status: 0 on success, 1 if an operation failed (each failure is reported on
//! stderr), 2 for bad arguments.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Parser, Subcommand};
use shmsync::{Options, SegmentInfo};

#[derive(Parser)]
#[command(name = "shmsync", version, about = "See, inspect and clean up shmsync objects")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every shmsync object in the directory.
    Ls {
        /// The directory to list instead of /dev/shm.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        /// One JSON array of objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show an object's header and state words (lock owner, queue positions, ...).
    Inspect {
        /// The object's name.
        name: String,
        /// The directory instead of /dev/shm.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Unlink objects by name (live handles keep working; the names go).
    Rm {
        /// The objects' names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The directory instead of /dev/shm.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
    },
    /// Unlink every object no live process holds.
    Gc {
        /// List what would be removed, and remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// The directory instead of /dev/shm.
        #[arg(long, value_name = "D")]
        dir: Option<PathBuf>,
    },
}

fn options(dir: Option<PathBuf>) -> Options {
    match dir {
        Some(dir) => Options::new().dir(dir),
        None => Options::new(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ls { dir, json } => ls(&options(dir), json),
        Command::Inspect { name, dir, json } => inspect(&name, &options(dir), json),
        Command::Rm { names, dir } => rm(&names, &options(dir)),
        Command::Gc { dry_run, dir } => gc(&options(dir), dry_run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("shmsync: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An object's row: what `ls` prints or encodes.
struct Row {
    info: SegmentInfo,
    /// The number of entries for queues and lists (from the state words).
    len: Option<u64>,
    alive: Vec<u32>,
    dead: Vec<u32>,
}

fn rows(opts: &Options) -> Result<Vec<Row>, String> {
    let listed = shmsync::segments(opts).map_err(|e| format!("cannot list: {e}"))?;
    Ok(listed
        .into_iter()
        .map(|info| {
            let len = if info.is_corrupted() {
                None
            } else {
                shmsync::inspect(info.name(), opts).ok().and_then(|(_, fields)| {
                    fields.iter().find(|(k, _)| k == "len").and_then(|(_, v)| v.parse().ok())
                })
            };
            let attached = if info.is_corrupted() { Vec::new() } else { info.attached() };
            let alive = attached.iter().filter(|a| a.is_alive()).map(|a| a.pid()).collect();
            let dead = attached.iter().filter(|a| !a.is_alive()).map(|a| a.pid()).collect();
            Row { info, len, alive, dead }
        })
        .collect())
}

fn age(info: &SegmentInfo) -> String {
    let Ok(age) = SystemTime::now().duration_since(info.created_at()) else {
        return "-".into();
    };
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn ls(opts: &Options, json: bool) -> Result<(), String> {
    let rows = rows(opts)?;
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                let i = &r.info;
                if let Some(problem) = i.problem() {
                    return serde_json::json!({
                        "name": i.name(), "corrupted": true, "problem": problem, "size": i.size(),
                    });
                }
                let created =
                    i.created_at().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                serde_json::json!({
                    "name": i.name(),
                    "kind": format!("{:?}", i.kind()),
                    "corrupted": false,
                    "size": i.size(),
                    "element_size": i.element_size(),
                    "capacity": i.capacity(),
                    "len": r.len,
                    "creator_pid": i.creator_pid(),
                    "created_at_unix": created.as_secs_f64(),
                    "attached_alive": r.alive,
                    "attached_dead": r.dead,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    println!(
        "{:<32} {:<10} {:>10} {:>9} {:>7} {:>13} {:>5}",
        "NAME", "KIND", "SIZE", "CAPACITY", "LEN", "ALIVE/DEAD", "AGE"
    );
    for r in &rows {
        let i = &r.info;
        if let Some(problem) = i.problem() {
            println!("{:<32} {:<10} {:>10}  {problem}", i.name(), "corrupted", i.size());
            continue;
        }
        println!(
            "{:<32} {:<10} {:>10} {:>9} {:>7} {:>13} {:>5}",
            i.name(),
            format!("{:?}", i.kind()),
            i.size(),
            i.capacity(),
            r.len.map_or("-".into(), |l| l.to_string()),
            format!("{}/{}", r.alive.len(), r.dead.len()),
            age(i),
        );
    }
    Ok(())
}

fn inspect(name: &str, opts: &Options, json: bool) -> Result<(), String> {
    let (_, fields) = shmsync::inspect(name, opts).map_err(|e| e.to_string())?;
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            fields.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
        println!("{}", serde_json::Value::Object(map));
    } else {
        let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in fields {
            println!("{k:<width$}  {v}");
        }
    }
    Ok(())
}

fn rm(names: &[String], opts: &Options) -> Result<(), String> {
    let mut failed = 0;
    for name in names {
        // Only shmsync objects: `inspect` refuses anything else.
        let removed =
            shmsync::inspect(name, opts).map_err(|e| e.to_string()).and_then(|(info, _)| {
                std::fs::remove_file(info.path())
                    .map_err(|e| format!("cannot remove {name:?}: {e}"))
            });
        if let Err(e) = removed {
            eprintln!("shmsync: rm {name}: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(format!("{failed} of {} not removed", names.len()));
    }
    Ok(())
}

fn gc(opts: &Options, dry_run: bool) -> Result<(), String> {
    let names = if dry_run { shmsync::gc_dry_run(opts) } else { shmsync::gc(opts) }
        .map_err(|e| format!("cannot collect: {e}"))?;
    for name in &names {
        println!("{}{name}", if dry_run { "would remove " } else { "removed " });
    }
    Ok(())
}
