//! The named synchronisation objects: each is one [`raw`](crate::raw) primitive alone in
//! its own segment, with the constructor family every named object has.

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
mod semaphore;

pub use barrier::Barrier;
pub use condition::Condition;
pub use event::Event;
pub use lock::Lock;
pub use rlock::RLock;
pub use semaphore::Semaphore;
