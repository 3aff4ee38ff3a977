//! A bounded ring of lines that counts what it had to drop.
//!
//! Items also have an absolute index: the number of items pushed before them. It stays the same
//! while the item is held, however many newer items push older ones out, so a viewer can keep
//! a position (the selected line) across pushes without adjusting it.

use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct Ring<T> {
    cap: usize,
    items: VecDeque<T>,
    evicted: u64,
}

impl<T> Ring<T> {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self { cap, items: VecDeque::with_capacity(cap.min(4096)), evicted: 0 }
    }

    /// Adds `item`; the oldest one, when the ring was full and it had to go.
    pub fn push(&mut self, item: T) -> Option<T> {
        let out = if self.items.len() == self.cap {
            self.evicted += 1;
            self.items.pop_front()
        } else {
            None
        };
        self.items.push_back(item);
        out
    }

    /// Removes the oldest item; it counts as evicted (absolute indices do not change).
    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.evicted += 1;
        Some(item)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Lines pushed out of the ring by newer ones (still in the files).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Absolute index of the oldest item held.
    pub fn start(&self) -> u64 {
        self.evicted
    }

    /// Absolute index the next pushed item will get.
    pub fn end(&self) -> u64 {
        self.evicted + self.items.len() as u64
    }

    pub fn get(&self, i: usize) -> Option<&T> {
        self.items.get(i)
    }

    /// The item at an absolute index, if still held.
    pub fn get_abs(&self, abs: u64) -> Option<&T> {
        let i = abs.checked_sub(self.evicted)?;
        self.items.get(usize::try_from(i).ok()?)
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn back(&self) -> Option<&T> {
        self.items.back()
    }

    /// Absolute index of the first item for which `pred` is false, assuming the ring is
    /// partitioned (all `true` items before all `false` ones), as with `slice::partition_point`.
    pub fn partition_point(&self, pred: impl FnMut(&T) -> bool) -> u64 {
        self.evicted + self.items.partition_point(pred) as u64
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + ExactSizeIterator {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_at_its_bound_and_counts_evictions() {
        let mut ring = Ring::new(3);
        for i in 0..10 {
            ring.push(i);
            assert!(ring.len() <= 3);
        }
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.evicted(), 7);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![7, 8, 9]);
    }

    #[test]
    fn zero_capacity_holds_one() {
        let mut ring = Ring::new(0);
        ring.push(1);
        ring.push(2);
        assert_eq!(ring.capacity(), 1);
        assert_eq!(ring.iter().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn absolute_indices_survive_eviction() {
        let mut ring = Ring::new(3);
        for i in 0..5u64 {
            ring.push(i * 10);
        }
        assert_eq!((ring.start(), ring.end()), (2, 5));
        assert_eq!(ring.get_abs(1), None);
        assert_eq!(ring.get_abs(2), Some(&20));
        assert_eq!(ring.get_abs(4), Some(&40));
        assert_eq!(ring.get_abs(5), None);
        assert_eq!(ring.pop_front(), Some(20));
        assert_eq!((ring.start(), ring.end()), (3, 5));
        assert_eq!(ring.get_abs(3), Some(&30));
        assert_eq!(ring.partition_point(|&v| v < 40), 4);
        assert_eq!(ring.partition_point(|_| true), 5);
        assert_eq!(ring.partition_point(|_| false), 3);
    }
}
