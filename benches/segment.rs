//! Cost of opening a named segment, next to the bare syscalls it is built from.
//!
//! `shmsync` validates the file (type, owner, size), maps it and checks the header; the
//! baseline opens and maps the same file with nothing checked. The ratio is the price of
//! the safety checks on a path that runs once per handle, not per operation.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use shmsync::{Options, Shared};

fn open_existing(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("shmsync-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts = Options::new().dir(&dir);
    let name = "bench-open";
    let _keep = Shared::<u64>::create_with(name, |_| {}, &opts).unwrap();
    let path = dir.join(name);

    let mut group = c.benchmark_group("segment_open");
    group.bench_function("shmsync_open", |b| {
        b.iter(|| black_box(Shared::<u64>::open_with(name, &opts).unwrap()))
    });
    group.bench_function("os_open_mmap", |b| {
        b.iter(|| {
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
            // SAFETY: the file is ours and nobody truncates it during the benchmark.
            black_box(unsafe { memmap2::MmapMut::map_mut(&file).unwrap() })
        })
    });
    group.finish();

    Shared::<u64>::unlink_with(name, &opts).unwrap();
    let _ = std::fs::remove_dir(&dir);
}

criterion_group!(benches, open_existing);
criterion_main!(benches);
