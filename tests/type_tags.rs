//! Structural type identity: a struct with `#[derive(shmsync::Pod)]` is known by its name,
//! size, field names, field offsets and field types, not by the module that declares it.

use shmsync::ShmSafe;

mod first {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub price: f64,
    }

    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Pair(pub u32, pub u32);
}

mod second {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub price: f64,
    }
}

mod retyped {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub price: u64, // same size, another type
    }
}

mod renamed {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub cost: f64,
    }
}

mod reordered {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Tick {
        pub price: f64,
        pub seq: u64,
    }
}

mod nested {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Book {
        pub best: super::first::Tick,
        pub levels: [u32; 4],
    }
}

mod nested_again {
    #[repr(C)]
    #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
    pub struct Book {
        pub best: super::second::Tick,
        pub levels: [u32; 4],
    }
}

#[test]
fn the_module_path_plays_no_part() {
    assert_eq!(first::Tick::type_tag(), second::Tick::type_tag());
    assert_eq!(nested::Book::type_tag(), nested_again::Book::type_tag());
}

#[test]
fn a_changed_field_changes_the_tag() {
    let tag = first::Tick::type_tag();
    assert_ne!(tag, retyped::Tick::type_tag(), "a field's type");
    assert_ne!(tag, renamed::Tick::type_tag(), "a field's name");
    assert_ne!(tag, reordered::Tick::type_tag(), "the fields' offsets");
}

#[test]
fn tags_are_stable_values() {
    // A tag is recorded in segments that other builds open: pin today's values, so that a
    // change to the hashing shows up here (and comes with a segment version bump).
    assert_eq!(<u64 as ShmSafe>::type_tag(), 0x4d35_d319_3e8d_66f2);
    assert_eq!(<[u32; 4] as ShmSafe>::type_tag(), 0xf58f_0fae_8789_0d5e);
    assert_eq!(first::Tick::type_tag(), 0x4413_99fc_4042_cc95);
    assert_eq!(first::Pair::type_tag(), 0xf947_860c_50e6_f29b);
}
