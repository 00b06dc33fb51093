//! Errors that explain themselves: every `OpenError` that concerns one object names it
//! in `Display`, with the detail that tells the user what to fix (the differing layout
//! property and both values, the busy role and its holder, the kinds).

#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::fs;
use std::time::Duration;

use common::{Remove, role, spawn, unique_name, wait_for_parent};
use shmsync::{
    Array, Event, LayoutProperty, Lock, OpenError, Options, Pipe, Semaphore, Value, mpmc, spsc,
};

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn not_found_names_the_object() {
    let name = unique_name("missing");
    let err = Lock::open(&name).unwrap_err();
    assert!(matches!(&err, OpenError::NotFound { name: n } if *n == name), "{err:?}");
    assert_eq!(err.to_string(), format!("no shared-memory object is called {name:?}"));
    // unlink says the same.
    let err = Event::unlink(&name).unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn already_exists_names_the_object() {
    let name = unique_name("taken");
    let _shm = Remove::shm(&name);
    let _lock = Lock::create(&name).unwrap();
    let err = Lock::create(&name).unwrap_err();
    assert!(matches!(&err, OpenError::AlreadyExists { name: n } if *n == name), "{err:?}");
    assert_eq!(err.to_string(), format!("a shared-memory object called {name:?} already exists"));
}

#[test]
fn kind_mismatch_names_the_object_and_both_kinds() {
    let name = unique_name("kind");
    let _shm = Remove::shm(&name);
    let _lock = Lock::create(&name).unwrap();
    let err = Event::open(&name).unwrap_err();
    assert_eq!(err.to_string(), format!("{name:?} holds an object of kind Lock, not Event"));
}

#[test]
fn layout_mismatch_says_which_property_and_both_values() {
    let name = unique_name("layout");
    let _shm = Remove::shm(&name);
    let _tx = spsc::Producer::<u64>::create(&name, 8).unwrap();

    // Another size.
    let err = spsc::Consumer::<u32>::open(&name).unwrap_err();
    assert!(
        matches!(
            &err,
            OpenError::LayoutMismatch {
                name: n, property: LayoutProperty::ElementSize, expected: 4, found: 8
            } if *n == name
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{name:?} has another layout: its element size is 8, 4 was asked for")
    );

    // Same size and alignment, another type: the tags, in hex.
    let err = spsc::Consumer::<i64>::open(&name).unwrap_err();
    let OpenError::LayoutMismatch { property: LayoutProperty::TypeTag, expected, found, .. } = err
    else {
        panic!("{err:?}")
    };
    let text = err.to_string();
    assert!(text.contains(&name) && text.contains("its type tag is"), "{text}");
    assert!(
        text.contains(&format!("{found:#018x}")) && text.contains(&format!("{expected:#018x}"))
    );

    // An array of another length: the capacity.
    let array_name = unique_name("array");
    let _array_shm = Remove::shm(&array_name);
    let _array = Array::<u32>::create(&array_name, 10).unwrap();
    let err = Array::<u32>::open_or_create(&array_name, 12).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{array_name:?} has another layout: its capacity is 10, 12 was asked for")
    );
}

#[test]
fn not_initialized_names_the_object() {
    // A file whose creator never got past sizing it: empty.
    let dir = std::env::temp_dir();
    let name = unique_name("uninit");
    let path = dir.join(&name);
    fs::write(&path, b"").unwrap();
    let opts = Options::new().dir(&dir).open_timeout(Duration::from_millis(50));
    let err = Value::<u64>::open_with(&name, &opts).unwrap_err();
    fs::remove_file(&path).unwrap();
    assert!(matches!(&err, OpenError::NotInitialized { name: n } if *n == name), "{err:?}");
    assert!(err.to_string().contains(&format!("the creator of {name:?} did not finish")), "{err}");
}

#[test]
fn busy_names_the_role_and_the_holder_in_this_process() {
    let name = unique_name("busy");
    let _shm = Remove::shm(&name);
    let _tx = spsc::Producer::<u64>::create(&name, 8).unwrap();
    let err = spsc::Producer::<u64>::open(&name).unwrap_err();
    let me = std::process::id();
    assert!(
        matches!(&err, OpenError::Busy { name: n, role, holder: Some(pid) }
            if *n == name && role == "producer" && *pid == me),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("the producer of {name:?} is held by another live handle (process {me})")
    );

    let pipe = unique_name("busy-pipe");
    let _pipe_shm = Remove::shm(&pipe);
    let _a = Pipe::create(&pipe, 4096).unwrap();
    let err = Pipe::open_end(&pipe, shmsync::End::A).unwrap_err();
    assert!(err.to_string().starts_with(&format!("the end A of {pipe:?} is held")), "{err}");
}

#[test]
fn busy_names_a_holder_in_another_process() {
    if role().is_some() {
        let name = std::env::var("BUSY_NAME").unwrap();
        let _rx = spsc::Consumer::<u64>::open(&name).unwrap();
        common::report("holding");
        wait_for_parent(LIMIT);
        return;
    }
    let name = unique_name("busy-child");
    let _shm = Remove::shm(&name);
    let _tx = spsc::Producer::<u64>::create(&name, 8).unwrap();
    let mut child = spawn(
        "busy_names_a_holder_in_another_process",
        "consumer",
        &[("BUSY_NAME", name.as_str())],
    );
    child.expect("holding", LIMIT);
    let err = spsc::Consumer::<u64>::open(&name).unwrap_err();
    let text = err.to_string();
    child.release();
    child.wait_success(LIMIT);
    assert_eq!(
        text,
        format!("the consumer of {name:?} is held by another live handle (process {})", {
            let OpenError::Busy { holder, .. } = &err else { panic!("{err:?}") };
            holder.expect("the holder's pid")
        })
    );
    let OpenError::Busy { holder: Some(pid), .. } = err else { unreachable!() };
    assert_ne!(pid, std::process::id(), "the child holds it");
}

#[test]
fn invalid_capacity_says_the_value_and_the_range() {
    let err = mpmc::Queue::<u64>::create(&unique_name("cap"), 0).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, OpenError::InvalidCapacity { requested: 0, .. }));
    assert!(text.starts_with("invalid capacity 0: ") && text.contains("1..="), "{text}");
    let err = Semaphore::create_bounded(&unique_name("sem"), 3, 2).unwrap_err();
    assert!(err.to_string().starts_with("invalid capacity 3: "), "{err}");
}
