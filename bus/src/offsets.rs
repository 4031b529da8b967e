//! Acknowledgement tracking: records of a partition finish in any order, but the committed
//! offset only moves past a record once it and every record before it are finished (as
//! Vector's Kafka source does). A crash then re-delivers unfinished work instead of skipping it.

use std::collections::{BTreeSet, HashMap};

#[derive(Default, Debug)]
pub struct OffsetTracker {
    partitions: HashMap<(String, u32), PartitionAcks>,
}

#[derive(Default, Debug)]
struct PartitionAcks {
    /// Offsets started and not finished.
    in_flight: BTreeSet<u64>,
    /// The highest offset started so far.
    highest: Option<u64>,
    /// The lowest offset started: nothing below it is ours to commit.
    floor: Option<u64>,
    /// The last offset reported as committable.
    committed: Option<u64>,
}

impl OffsetTracker {
    pub fn start(&mut self, topic: &str, partition: u32, offset: u64) {
        let p = self
            .partitions
            .entry((topic.to_owned(), partition))
            .or_default();
        p.in_flight.insert(offset);
        p.highest = Some(p.highest.map_or(offset, |h| h.max(offset)));
        p.floor = Some(p.floor.map_or(offset, |f| f.min(offset)));
    }

    /// Marks `offset` finished; returns the offset to commit if the commit point moved.
    pub fn finish(&mut self, topic: &str, partition: u32, offset: u64) -> Option<u64> {
        let p = self.partitions.get_mut(&(topic.to_owned(), partition))?;
        p.in_flight.remove(&offset);
        let point = match p.in_flight.first() {
            // Everything below the oldest unfinished record is done.
            Some(&oldest) => oldest.checked_sub(1)?,
            None => p.highest?,
        };
        if p.floor.is_some_and(|f| point < f) || p.committed.is_some_and(|c| c >= point) {
            return None;
        }
        p.committed = Some(point);
        Some(point)
    }

    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.in_flight.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_contiguous_prefixes() {
        let mut t = OffsetTracker::default();
        for o in 0..4 {
            t.start("calls", 0, o);
        }
        assert_eq!(t.finish("calls", 0, 2), None);
        assert_eq!(t.finish("calls", 0, 1), None);
        assert_eq!(t.finish("calls", 0, 0), Some(2));
        assert_eq!(t.finish("calls", 0, 3), Some(3));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::default();
        t.start("calls", 0, 10);
        t.start("calls", 1, 5);
        assert_eq!(t.finish("calls", 1, 5), Some(5));
        assert_eq!(t.finish("calls", 0, 10), Some(10));
        assert_eq!(t.finish("calls", 3, 1), None);
    }

    #[test]
    fn never_commits_below_what_it_started() {
        let mut t = OffsetTracker::default();
        t.start("calls", 0, 10);
        t.start("calls", 0, 11);
        assert_eq!(t.finish("calls", 0, 11), None);
        assert_eq!(t.finish("calls", 0, 10), Some(11));
    }
}
