//! Values in shared memory: [`Shared<T>`] (a layout of your own), and Python's `Value` and
//! `Array` (plain data behind their own lock).

mod shared;
mod value;

pub use shared::Shared;
pub use value::{Array, ArrayGuard, Value};
