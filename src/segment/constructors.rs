//! The one generator of the constructor family every named object has: for each
//! constructor `f`, a `f(name, args..)` that uses the default [`Options`](crate::Options)
//! and an `f_with(name, args.., opts)` that takes them; and `unlink` / `unlink_with`.
//!
//! ```ignore
//! constructors! {
//!     returns Self, what "queue";
//!     /// Creates the queue ... (the docs of `create`, errors included)
//!     create / create_with (capacity: usize) = |name, capacity, opts| Self::make(name, capacity, opts);
//!     /// Opens the queue ...
//!     open / open_with () = |name, opts| Self::attach(name, opts);
//! }
//! ```
//!
//! The body is a closure called with the name, the arguments and the options, in that
//! order: macro hygiene keeps the generated parameters out of the caller's sight.

/// See the module docs.
macro_rules! constructors {
    (
        returns $ret:ty, what $what:literal;
        $(
            $(#[$doc:meta])*
            $f:ident / $f_with:ident ( $($arg:ident : $ty:ty),* ) = $body:expr;
        )*
    ) => {
        $(
            $(#[$doc])*
            pub fn $f(name: &str $(, $arg: $ty)*) -> Result<$ret, $crate::OpenError> {
                Self::$f_with(name $(, $arg)*, &$crate::Options::new())
            }

            #[doc = concat!("[`", stringify!($f), "`](Self::", stringify!($f), ") with explicit [`Options`](crate::Options): another directory, mode or open timeout.")]
            ///
            /// # Errors
            ///
            #[doc = concat!("As [`", stringify!($f), "`](Self::", stringify!($f), ").")]
            pub fn $f_with(
                name: &str
                $(, $arg: $ty)*,
                opts: &$crate::Options,
            ) -> Result<$ret, $crate::OpenError> {
                ($body)(name $(, $arg)*, opts)
            }
        )*

        #[doc = concat!("Removes the name of the ", $what, " `name` from `/dev/shm`.")]
        ///
        /// Handles that are open, in this process and others, keep working; a later
        /// `create` of the name makes a new, unrelated object.
        ///
        /// # Errors
        ///
        /// `NotFound` if nothing has the name, `InvalidName`, `PermissionDenied`, `Io`.
        pub fn unlink(name: &str) -> Result<(), $crate::OpenError> {
            Self::unlink_with(name, &$crate::Options::new())
        }

        #[doc = concat!("Removes the name of the ", $what, " `name` from the directory of `opts`.")]
        ///
        /// # Errors
        ///
        /// As [`unlink`](Self::unlink).
        pub fn unlink_with(name: &str, opts: &$crate::Options) -> Result<(), $crate::OpenError> {
            $crate::segment::Segment::unlink(name, opts)
        }
    };
}
pub(crate) use constructors;

/// The family of a single-value object whose zeroed state is its initial state (Lock,
/// Event, Condition): `create`, `open`, `open_or_create`, their `_with` forms, `unlink`
/// and `info`. The type must be a struct with one field `inner: Object<_>`.
macro_rules! zeroed_object_constructors {
    ($kind:expr, $what:literal, $initially:literal) => {
        $crate::segment::constructors::constructors! {
            returns Self, what $what;
            #[doc = concat!("Creates the ", $what, " `name` in `/dev/shm`, ", $initially, ".")]
            ///
            /// # Errors
            ///
            /// `AlreadyExists`, `InvalidName`, `NoSpace`, `PermissionDenied`, `Io`: see
            /// [`OpenError`](crate::OpenError).
            create / create_with () = |name, opts| {
                $crate::segment::object::Object::create(name, $kind, opts, |_| {})
                    .map(|inner| Self { inner })
            };
            #[doc = concat!("Opens the existing ", $what, " called `name` in `/dev/shm`.")]
            ///
            /// # Errors
            ///
            /// `NotFound`, `InvalidName`, `NotInitialized` (its creator did not finish
            /// within the open timeout), `KindMismatch` (another kind of object),
            /// `LayoutMismatch`, `VersionMismatch`, `Corrupted`, `PermissionDenied`, `Io`:
            /// see [`OpenError`](crate::OpenError).
            open / open_with () = |name, opts| {
                $crate::segment::object::Object::open(name, $kind, opts).map(|inner| Self { inner })
            };
            #[doc = concat!("Opens the ", $what, " `name`, or creates it (", $initially, ") if absent.")]
            ///
            /// Race-free between processes: exactly one caller creates it.
            ///
            /// # Errors
            ///
            /// Those of `create` and `open`.
            open_or_create / open_or_create_with () = |name, opts| {
                $crate::segment::object::Object::open_or_create(name, $kind, opts, |_| {})
                    .map(|inner| Self { inner })
            };
        }

        /// Facts about the segment: name, path, instance id, creator pid, length.
        pub fn info(&self) -> &$crate::SegmentInfo {
            self.inner.info()
        }
    };
}
pub(crate) use zeroed_object_constructors;
