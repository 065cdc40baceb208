//! A set of disjoint half-open `u64` ranges, shared by the receive buffer
//! (out-of-order data held beyond `rcv_nxt`) and the sender's SACK
//! scoreboard (ranges the peer selectively acknowledged).
//!
//! Both sets are driven by the peer: which segments arrive, and which SACK
//! blocks it sends. So the set is bounded and every operation is
//! logarithmic:
//!
//! - ranges live in a `BTreeMap` keyed by start (quinn-proto's `RangeSet`
//!   is the model; written here because quinn-proto does not export it);
//!   adjacent or overlapping ranges are merged on insert, so the set is
//!   always sorted, disjoint and non-adjacent;
//! - an insert costs O(log n) plus O(log n) for every range it swallows;
//!   a range is created once and swallowed once, so the amortised cost per
//!   insert is O(log n) whatever order the peer chooses;
//! - at most `max_ranges` ranges are held. An insert that would create one
//!   more is refused (it returns `false` and changes nothing); inserts
//!   that extend or merge existing ranges are always taken, so the holes a
//!   sender fills in order are always accepted. Refusing is safe in both
//!   uses: a refused data segment is simply not stored (it will be
//!   retransmitted, as if it had been lost), and a refused SACK block only
//!   means less information for loss recovery (the retransmission timer
//!   stays the backstop).

use std::collections::BTreeMap;
use std::ops::Bound;

/// Disjoint, non-adjacent `[start, end)` ranges with a bound on their
/// number. See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct RangeSet {
    /// start → end, `start < end`.
    map: BTreeMap<u64, u64>,
    max_ranges: usize,
    /// Sum of the lengths of all ranges.
    bytes: u64,
}

impl RangeSet {
    /// An empty set holding at most `max_ranges` (≥ 1) ranges.
    pub(crate) fn new(max_ranges: usize) -> RangeSet {
        RangeSet {
            map: BTreeMap::new(),
            max_ranges: max_ranges.max(1),
            bytes: 0,
        }
    }

    /// Number of ranges held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Total length of all ranges.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn clear(&mut self) {
        self.map.clear();
        self.bytes = 0;
    }

    /// The lowest range.
    pub(crate) fn first(&self) -> Option<(u64, u64)> {
        self.map.first_key_value().map(|(&s, &e)| (s, e))
    }

    /// Ranges in ascending order.
    pub(crate) fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Ranges that end after `from`, in ascending order (the first may
    /// start before `from`).
    pub(crate) fn iter_from(&self, from: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.containing(from);
        let rest = self
            .map
            .range((Bound::Excluded(from), Bound::Unbounded))
            .map(|(&s, &e)| (s, e));
        first.into_iter().chain(rest)
    }

    /// The range holding `pos`, if any.
    pub(crate) fn containing(&self, pos: u64) -> Option<(u64, u64)> {
        self.map
            .range(..=pos)
            .next_back()
            .filter(|&(_, &e)| pos < e)
            .map(|(&s, &e)| (s, e))
    }

    /// The first range starting after `pos`.
    pub(crate) fn next_after(&self, pos: u64) -> Option<(u64, u64)> {
        self.map
            .range((Bound::Excluded(pos), Bound::Unbounded))
            .next()
            .map(|(&s, &e)| (s, e))
    }

    /// Whether inserting `[start, end)` would be accepted.
    pub(crate) fn can_insert(&self, start: u64, end: u64) -> bool {
        if start >= end || self.map.len() < self.max_ranges {
            return true;
        }
        // Full: only an insert touching an existing range is taken.
        let before = self.map.range(..=end).next_back();
        before.is_some_and(|(_, &e)| e >= start)
    }

    /// Adds `[start, end)`, merging with what it overlaps or touches.
    /// Returns `false` (and changes nothing) if that would exceed the bound.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        if !self.can_insert(start, end) {
            return false;
        }
        let (mut s, mut e) = (start, end);
        // A range starting at or before `start` that reaches it.
        if let Some((&ps, &pe)) = self.map.range(..=start).next_back()
            && pe >= start
        {
            if pe >= end {
                return true; // already covered
            }
            s = ps;
            e = e.max(pe);
            self.map.remove(&ps);
            self.bytes -= pe - ps;
        }
        // Ranges starting inside `(start, e]` are swallowed.
        while let Some((&ns, &ne)) = self
            .map
            .range((Bound::Excluded(s), Bound::Included(e)))
            .next()
        {
            e = e.max(ne);
            self.map.remove(&ns);
            self.bytes -= ne - ns;
        }
        self.map.insert(s, e);
        self.bytes += e - s;
        true
    }

    /// Drops everything below `from` (cutting a range that straddles it).
    pub(crate) fn remove_below(&mut self, from: u64) {
        while let Some((&s, &e)) = self.map.first_key_value() {
            if s >= from {
                break;
            }
            self.map.remove(&s);
            self.bytes -= e - s;
            if e > from {
                self.map.insert(from, e);
                self.bytes += e - from;
                break;
            }
        }
    }

    /// Removes and returns the lowest range if it starts at or before
    /// `pos` (the receive buffer pulling in data that became contiguous).
    pub(crate) fn pop_first_if_reaches(&mut self, pos: u64) -> Option<(u64, u64)> {
        let (&s, &e) = self.map.first_key_value()?;
        if s > pos {
            return None;
        }
        self.map.remove(&s);
        self.bytes -= e - s;
        Some((s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(r: &RangeSet) -> Vec<(u64, u64)> {
        r.iter().collect()
    }

    #[test]
    fn merges_overlapping_and_adjacent_ranges() {
        let mut r = RangeSet::new(100);
        assert!(r.insert(10, 20));
        assert!(r.insert(30, 40));
        assert!(r.insert(50, 60));
        assert_eq!(ranges(&r), vec![(10, 20), (30, 40), (50, 60)]);
        assert!(r.insert(20, 30)); // adjacent on both sides
        assert_eq!(ranges(&r), vec![(10, 40), (50, 60)]);
        assert!(r.insert(5, 55));
        assert_eq!(ranges(&r), vec![(5, 60)]);
        assert!(r.insert(7, 9)); // covered
        assert_eq!(ranges(&r), vec![(5, 60)]);
        assert_eq!(r.bytes(), 55);
        assert!(r.insert(70, 71));
        assert_eq!(r.bytes(), 56);
    }

    #[test]
    fn lookups() {
        let mut r = RangeSet::new(100);
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.containing(10), Some((10, 20)));
        assert_eq!(r.containing(19), Some((10, 20)));
        assert_eq!(r.containing(20), None);
        assert_eq!(r.next_after(10), Some((30, 40)));
        assert_eq!(r.next_after(40), None);
        assert_eq!(
            r.iter_from(15).collect::<Vec<_>>(),
            vec![(10, 20), (30, 40)]
        );
        assert_eq!(r.iter_from(20).collect::<Vec<_>>(), vec![(30, 40)]);
        assert_eq!(r.iter_from(30).collect::<Vec<_>>(), vec![(30, 40)]);
    }

    #[test]
    fn remove_below_cuts_and_counts() {
        let mut r = RangeSet::new(100);
        r.insert(10, 20);
        r.insert(30, 40);
        r.remove_below(15);
        assert_eq!(ranges(&r), vec![(15, 20), (30, 40)]);
        assert_eq!(r.bytes(), 15);
        r.remove_below(35);
        assert_eq!(ranges(&r), vec![(35, 40)]);
        assert_eq!(r.bytes(), 5);
        assert_eq!(r.pop_first_if_reaches(34), None);
        assert_eq!(r.pop_first_if_reaches(35), Some((35, 40)));
        assert!(r.is_empty());
        assert_eq!(r.bytes(), 0);
    }

    #[test]
    fn bound_refuses_new_ranges_but_takes_merges() {
        let mut r = RangeSet::new(3);
        assert!(r.insert(0, 1));
        assert!(r.insert(10, 11));
        assert!(r.insert(20, 21));
        assert!(!r.insert(30, 31));
        assert!(!r.can_insert(5, 6));
        assert_eq!(r.len(), 3);
        assert!(r.insert(1, 5)); // extends the first
        assert!(r.insert(21, 25)); // extends the last
        assert!(r.insert(8, 10)); // touches the second from below
        assert!(r.insert(5, 8)); // joins two: frees a slot
        assert_eq!(ranges(&r), vec![(0, 11), (20, 25)]);
        assert!(r.insert(30, 31));
        assert_eq!(r.len(), 3);
    }

    /// A hostile peer choosing the worst order (descending, every other
    /// unit) cannot grow the set past its bound, and a million inserts stay
    /// cheap (each is O(log n); the old vector splice was O(n)).
    #[test]
    fn hostile_insert_order_is_bounded_and_cheap() {
        let mut r = RangeSet::new(1024);
        let t = std::time::Instant::now();
        for i in (0..1_000_000u64).rev() {
            r.insert(2 * i, 2 * i + 1);
            assert!(r.len() <= 1024);
        }
        assert_eq!(r.len(), 1024);
        // Below the held ranges, new ones are refused in O(log n).
        assert!(!r.insert(1, 2));
        // Filling the held holes in order is always taken and collapses
        // the set.
        let low = 1_000_000 - 1024;
        for i in low..1_000_000u64 - 1 {
            assert!(r.insert(2 * i + 1, 2 * i + 2));
        }
        assert_eq!(ranges(&r), vec![(2 * low, 2_000_000 - 1)]);
        assert!(t.elapsed() < std::time::Duration::from_secs(20));
    }
}
