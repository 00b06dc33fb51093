//! Channel-style iteration over a [`Queue`]: values until no other handle is left, as
//! crossbeam-channel's receivers do.

use super::handles::Queue;

/// The values of a [`Queue`], waiting for each, until it is empty and `Disconnected` (no
/// other handle alive, and one had pushed): [`Queue::iter`], or `for v in &queue`.
///
/// It also ends if the queue's shared state is corrupted; call [`pop`](Queue::pop)
/// afterwards to tell the two apart. Several processes may iterate one queue: each value
/// goes to one of them.
#[derive(Debug)]
pub struct Iter<'a, T: bytemuck::Pod + crate::ShmSafe> {
    pub(super) queue: &'a Queue<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.pop().ok()
    }
}

/// The values already in a [`Queue`], without waiting: [`Queue::try_iter`]. Ends at the
/// first `Empty` (or `Disconnected`).
#[derive(Debug)]
pub struct TryIter<'a, T: bytemuck::Pod + crate::ShmSafe> {
    pub(super) queue: &'a Queue<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Iterator for TryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.try_pop().ok()
    }
}

/// A [`Queue`] handle turned into an iterator (`for v in queue`): as [`Iter`], owning the
/// handle.
#[derive(Debug)]
pub struct IntoIter<T: bytemuck::Pod + crate::ShmSafe> {
    pub(super) queue: Queue<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.queue.pop().ok()
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> IntoIterator for Queue<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { queue: self }
    }
}

impl<'a, T: bytemuck::Pod + crate::ShmSafe> IntoIterator for &'a Queue<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        Iter { queue: self }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> Queue<T> {
    /// The values as they come, waiting for each, until the queue is empty and every
    /// other handle gone: crossbeam-channel's `Receiver::iter`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmsync::{Options, mpmc};
    /// # let opts = Options::new().dir(std::env::temp_dir());
    /// # let name = format!("doc-mpmc-iter-{}", std::process::id());
    /// let jobs = mpmc::Queue::<u64>::create_with(&name, 8, &opts)?;
    /// let sender = mpmc::Queue::<u64>::open_with(&name, &opts)?; // usually another process
    /// for v in 1..=3 {
    ///     sender.push(v)?;
    /// }
    /// drop(sender);
    /// assert_eq!(jobs.try_iter().collect::<Vec<_>>(), [1, 2, 3]);
    /// # mpmc::Queue::<u64>::unlink_with(&name, &opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { queue: self }
    }

    /// The values already there, without waiting: crossbeam-channel's
    /// `Receiver::try_iter`.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { queue: self }
    }
}
