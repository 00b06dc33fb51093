//! Channel-style iteration over a [`Consumer`]: values until the producer is gone, as
//! crossbeam-channel's and std's receivers do.

use super::handles::Consumer;

/// The values of a [`Consumer`], waiting for each, until the queue is empty and its
/// producer gone (`Disconnected`): [`Consumer::iter`], or `for v in &mut consumer`.
///
/// It also ends if the queue's shared state is corrupted (`pop` would say `Corrupted`);
/// call [`pop`](Consumer::pop) afterwards to tell the two apart.
#[derive(Debug)]
pub struct Iter<'a, T: bytemuck::Pod + crate::ShmSafe> {
    pub(super) consumer: &'a mut Consumer<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Iterator for Iter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.consumer.pop().ok()
    }
}

/// The values already in a [`Consumer`]'s queue, without waiting: [`Consumer::try_iter`].
/// Ends at the first `Empty` (or `Disconnected`).
#[derive(Debug)]
pub struct TryIter<'a, T: bytemuck::Pod + crate::ShmSafe> {
    pub(super) consumer: &'a mut Consumer<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Iterator for TryIter<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.consumer.try_pop().ok()
    }
}

/// A [`Consumer`] turned into an iterator (`for v in consumer`): as [`Iter`], owning the
/// consumer.
#[derive(Debug)]
pub struct IntoIter<T: bytemuck::Pod + crate::ShmSafe> {
    pub(super) consumer: Consumer<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Iterator for IntoIter<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        self.consumer.pop().ok()
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> IntoIterator for Consumer<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter { consumer: self }
    }
}

impl<'a, T: bytemuck::Pod + crate::ShmSafe> IntoIterator for &'a mut Consumer<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        Iter { consumer: self }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> Consumer<T> {
    /// The values as they come, waiting for each, until the queue is empty and the
    /// producer gone: crossbeam-channel's `Receiver::iter`.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmsync::{Options, spsc};
    /// # let opts = Options::new().dir(std::env::temp_dir());
    /// # let name = format!("doc-spsc-iter-{}", std::process::id());
    /// let mut tx = spsc::Producer::<u64>::create_with(&name, 8, &opts)?;
    /// let mut rx = spsc::Consumer::<u64>::open_with(&name, &opts)?;
    /// for v in 1..=3 {
    ///     tx.push(v)?;
    /// }
    /// drop(tx); // usually: the producer's process ends
    /// assert_eq!(rx.iter().collect::<Vec<_>>(), [1, 2, 3]);
    /// # spsc::Producer::<u64>::unlink_with(&name, &opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn iter(&mut self) -> Iter<'_, T> {
        Iter { consumer: self }
    }

    /// The values already there, without waiting: crossbeam-channel's
    /// `Receiver::try_iter`.
    pub fn try_iter(&mut self) -> TryIter<'_, T> {
        TryIter { consumer: self }
    }
}
