//! Values in shared memory: [`Shared<T>`] (a layout of your own), and Python's `Value` and
//! `Array` (plain data behind their own lock).

mod dict;
mod fixed_str;
mod list;
mod shared;
mod value;

pub use dict::Dict;
pub use fixed_str::{FixedStr, FixedStrError};
#[cfg(not(loom))]
pub(crate) use list::Control as ListControl;
pub use list::{List, ListGuard};
pub use shared::Shared;
pub use value::{Array, ArrayGuard, Value};
