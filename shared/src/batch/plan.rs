//! Which loose archives go into which `slony_logs_<from>-<to>.tar.gz` batch: the plan
//! both housekeepings follow (the receiver's applied archives, the manager's per-site
//! copies).
//!
//! [`plan_packing`] is a pure function of (loose counters, batches on disk, the highest
//! counter that may be packed, [`PackRules`]), so it is tested without a disk. Batches
//! are aligned to multiples of the batch size, `k*N+1 ..= (k+1)*N`, so that every run
//! (and every site) produces the same names, and only a *complete* run of loose archives
//! is packed. A batch on disk beside loose copies of its members is a packing that was
//! cut off before the copies were deleted: it is planned for recovery, never packed
//! again.
//!
//! The two sides differ in two rules, which [`PackRules`] names:
//!
//! - [`FirstBatch`]: the manager starts a site's first batch at the site's first counter
//!   (a site that subscribed mid-range gets a short first batch); the receiver keeps
//!   every batch aligned, and archives below its first complete range wait.
//! - [`PartlyCovered`]: when a batch of another size covers the start of a range (the
//!   batch size was changed), the receiver packs the rest of the range as a shorter
//!   batch ending on the aligned boundary, so its stream realigns; the manager leaves
//!   such a range loose.

use crate::archive::name::BatchName;
use crate::counter::Counter;
use std::collections::BTreeSet;

/// Where the first batch of a stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBatch {
    /// On an aligned boundary, like every other batch: the archives of a stream that
    /// starts in the middle of a range wait for the ones before them (the receiver).
    Aligned,
    /// At the stream's first counter (its lowest loose archive or batch), so a stream
    /// that starts in the middle of a range gets a short first batch (the manager, whose
    /// site streams start at their `since`).
    AtStreamStart,
}

/// What happens to a range that batches already on disk cover in part, from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartlyCovered {
    /// The rest of the range after those batches is packed as a shorter batch ending on
    /// the aligned boundary, so the stream realigns after a change of the batch size
    /// (the receiver).
    PackTheRest,
    /// The range's loose archives are left loose (the manager).
    LeaveLoose,
}

/// The rules [`plan_packing`] follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackRules {
    /// Archives per batch, `N` (at least 1).
    pub batch_size: u64,
    /// Where a stream's first batch starts.
    pub first_batch: FirstBatch,
    /// What happens to a range existing batches cover from its start.
    pub partly_covered: PartlyCovered,
}

/// What [`plan_packing`] decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PackPlan {
    /// Batches already on disk whose members (these counters) still lie loose: verify
    /// the batch against them, then delete the loose copies.
    pub recover: Vec<(BatchName, Vec<Counter>)>,
    /// Complete runs of loose archives to pack, in counter order.
    pub pack: Vec<BatchName>,
    /// Aligned ranges holding loose archives that cannot be packed because an existing
    /// batch (the second name) covers part of the range: its middle or its end, or,
    /// under [`PartlyCovered::LeaveLoose`], its start.
    pub blocked: Vec<(BatchName, BatchName)>,
    /// Loose archives up to the limit whose run is not complete yet (they wait for a
    /// later run).
    pub waiting: u64,
    /// Loose archives above the limit (left alone).
    pub beyond: u64,
}

/// The aligned batch range `k*n+1 ..= (k+1)*n` holding counter `c` (which is at least 1).
pub fn aligned_range(c: Counter, n: u64) -> BatchName {
    let from = (c.0.saturating_sub(1) / n) * n + 1;
    BatchName::new(Counter(from), Counter(from.saturating_add(n - 1)))
}

/// Number of counters in a batch range.
pub fn span(b: BatchName) -> u64 {
    b.to.0 - b.from.0 + 1
}

fn overlaps(a: BatchName, b: BatchName) -> bool {
    a.from <= b.to && b.from <= a.to
}

/// How the batches on disk cover a window `from ..= to` of an aligned range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// No batch overlaps it.
    Free,
    /// Batches cover it from its start, `first` among them, and leave `rest` (up to the
    /// window's end) uncovered.
    Start { first: BatchName, rest: BatchName },
    /// Batches cover all of it.
    Whole,
    /// This batch covers part of it but leaves a hole before it (or before the end of
    /// the window): no single batch ending on the window's end fits.
    Hole(BatchName),
}

/// How `existing` (sorted) covers `window`.
fn coverage(window: BatchName, existing: &[BatchName]) -> Coverage {
    let mut over = existing.iter().copied().filter(|b| overlaps(*b, window));
    let Some(first) = over.next() else {
        return Coverage::Free;
    };
    if first.from > window.from {
        return Coverage::Hole(first);
    }
    let mut cur = first.to.next();
    for b in over {
        if b.from > cur {
            return Coverage::Hole(b);
        }
        cur = cur.max(b.to.next());
    }
    if cur <= window.to {
        Coverage::Start {
            first,
            rest: BatchName::new(cur, window.to),
        }
    } else {
        Coverage::Whole
    }
}

/// The batches on disk (up to `upper`) beside loose copies of their members, each loose
/// counter given to the first batch holding it: a counter claimed by one batch is not
/// offered to a second, overlapping one.
fn recoveries(
    loose: &BTreeSet<Counter>,
    sorted: &[BatchName],
    upper: Counter,
) -> Vec<(BatchName, Vec<Counter>)> {
    let mut claimed = BTreeSet::new();
    let mut out = Vec::new();
    for b in sorted.iter().filter(|b| b.to <= upper) {
        let counters: Vec<Counter> = loose
            .range(b.from..=b.to)
            .filter(|c| !claimed.contains(*c))
            .copied()
            .collect();
        if !counters.is_empty() {
            claimed.extend(counters.iter().copied());
            out.push((*b, counters));
        }
    }
    out
}

/// The lowest counter a batch of range `r` may start at, under `rule`.
fn floor(
    rule: FirstBatch,
    loose: &BTreeSet<Counter>,
    sorted: &[BatchName],
    r: BatchName,
) -> Counter {
    match rule {
        FirstBatch::Aligned => r.from,
        FirstBatch::AtStreamStart => {
            // The stream's first counter: its lowest loose archive or batch.
            let first = loose.first().copied().into_iter();
            let first = first.chain(sorted.first().map(|b| b.from)).min();
            first.map_or(r.from, |f| r.from.max(f))
        }
    }
}

/// Decides what to pack.
///
/// `loose` are the counters of the loose archives, `existing` the batches already
/// written, `upper` the highest counter that may be packed (the applied position, or
/// the counter before the newest archive cut). Only batches ending at or below `upper`
/// are packed or recovered, and a batch is packed only when every one of its counters is
/// loose (a complete run). Counters above `upper` are only counted, in
/// [`PackPlan::beyond`].
///
/// # Panics
///
/// If `rules.batch_size` is 0 (both configurations refuse it).
pub fn plan_packing(
    loose: &BTreeSet<Counter>,
    existing: &[BatchName],
    upper: Counter,
    rules: &PackRules,
) -> PackPlan {
    assert!(rules.batch_size > 0, "batch_size must be at least 1");
    let mut sorted = existing.to_vec();
    sorted.sort();
    sorted.dedup();
    let mut plan = PackPlan {
        recover: recoveries(loose, &sorted, upper),
        beyond: loose.range(upper.next()..).count() as u64,
        ..PackPlan::default()
    };
    let ranges: BTreeSet<BatchName> = loose
        .range(..=upper)
        .map(|c| aligned_range(*c, rules.batch_size))
        .collect();
    for r in ranges {
        let window = BatchName::new(floor(rules.first_batch, loose, &sorted, r), r.to);
        let free = match (coverage(window, &sorted), rules.partly_covered) {
            (Coverage::Free, _) => window,
            (Coverage::Start { rest, .. }, PartlyCovered::PackTheRest) => rest,
            (Coverage::Start { first, .. }, PartlyCovered::LeaveLoose)
            | (Coverage::Hole(first), _) => {
                plan.blocked.push((r, first));
                continue;
            }
            (Coverage::Whole, _) => continue,
        };
        let present = loose.range(free.from..=free.to).count() as u64;
        if free.to <= upper && present == span(free) {
            plan.pack.push(free);
        } else if free.from <= upper {
            plan.waiting += loose.range(free.from..=free.to.min(upper)).count() as u64;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(from: u64, to: u64) -> BatchName {
        BatchName::new(Counter(from), Counter(to))
    }

    fn set(range: impl IntoIterator<Item = u64>) -> BTreeSet<Counter> {
        range.into_iter().map(Counter).collect()
    }

    fn rules(batch_size: u64, first_batch: FirstBatch, partly_covered: PartlyCovered) -> PackRules {
        PackRules {
            batch_size,
            first_batch,
            partly_covered,
        }
    }

    /// The receiver's rules: aligned batches, realigned after a change of the size.
    fn realigning(batch_size: u64) -> PackRules {
        rules(batch_size, FirstBatch::Aligned, PartlyCovered::PackTheRest)
    }

    /// The manager's rules: a site's first batch starts at its first counter.
    fn from_site_start(batch_size: u64) -> PackRules {
        rules(
            batch_size,
            FirstBatch::AtStreamStart,
            PartlyCovered::LeaveLoose,
        )
    }

    #[test]
    fn aligned_ranges() {
        assert_eq!(aligned_range(Counter(1), 5000), b(1, 5000));
        assert_eq!(aligned_range(Counter(5000), 5000), b(1, 5000));
        assert_eq!(aligned_range(Counter(5001), 5000), b(5001, 10000));
        assert_eq!(aligned_range(Counter(7), 1), b(7, 7));
        let top = crate::counter::MAX_COUNTER;
        assert_eq!(aligned_range(Counter(top), u64::MAX).from, Counter(1));
    }

    // ----- the receiver's rules -----

    #[test]
    fn packs_only_complete_applied_runs() {
        // The case: 12,000 applied, 10 more in the directory but not applied.
        let plan = plan_packing(&set(1..=12_010), &[], Counter(12_000), &realigning(5000));
        assert_eq!(plan.pack, [b(1, 5000), b(5001, 10_000)]);
        assert_eq!(plan.waiting, 2000);
        assert_eq!(plan.beyond, 10);
        assert!(plan.recover.is_empty() && plan.blocked.is_empty());

        // The database is behind the files: only what it has applied counts.
        let plan = plan_packing(&set(1..=12_010), &[], Counter(9_999), &realigning(5000));
        assert_eq!(plan.pack, [b(1, 5000)]);
        assert_eq!(plan.waiting, 4999);
        assert_eq!(plan.beyond, 2011);

        // Exactly on the boundary.
        let plan = plan_packing(&set(1..=10), &[], Counter(10), &realigning(5));
        assert_eq!(plan.pack, [b(1, 5), b(6, 10)]);
        assert_eq!(plan.waiting, 0);
    }

    #[test]
    fn holes_and_late_starts_wait() {
        // 3 is missing: 1..=5 waits, 6..=10 is packed.
        let mut loose = set(1..=10);
        loose.remove(&Counter(3));
        let plan = plan_packing(&loose, &[], Counter(10), &realigning(5));
        assert_eq!(plan.pack, [b(6, 10)]);
        assert_eq!(plan.waiting, 4);

        // A site that started at counter 3 never completes 1..=5 on its own.
        let plan = plan_packing(&set(3..=12), &[], Counter(12), &realigning(5));
        assert_eq!(plan.pack, [b(6, 10)]);
        assert_eq!(plan.waiting, 3 + 2);

        // Nothing applied yet, nothing loose.
        assert_eq!(
            plan_packing(&set(1..=4), &[], Counter(0), &realigning(5)),
            PackPlan {
                beyond: 4,
                ..PackPlan::default()
            }
        );
        assert_eq!(
            plan_packing(&BTreeSet::new(), &[], Counter(100), &realigning(5)),
            PackPlan::default()
        );
    }

    #[test]
    fn existing_batches_are_recovered_not_repacked() {
        // A crash after writing 1..=5 but before deleting the loose files.
        let plan = plan_packing(&set(1..=12), &[b(1, 5)], Counter(12), &realigning(5));
        assert_eq!(plan.recover, [(b(1, 5), set(1..=5).into_iter().collect())]);
        assert_eq!(plan.pack, [b(6, 10)]);
        assert_eq!(plan.waiting, 2);

        // A crash in the middle of deleting them.
        let plan = plan_packing(
            &set([2, 4, 6, 7, 8, 9, 10]),
            &[b(1, 5)],
            Counter(10),
            &realigning(5),
        );
        assert_eq!(plan.recover, [(b(1, 5), vec![Counter(2), Counter(4)])]);
        assert_eq!(plan.pack, [b(6, 10)]);

        // A batch above the applied position is left alone, and so are its loose files.
        let plan = plan_packing(&set(6..=10), &[b(6, 10)], Counter(9), &realigning(5));
        assert!(plan.recover.is_empty() && plan.pack.is_empty());

        // Overlapping batches on disk: each loose copy is verified against one of them.
        let plan = plan_packing(&set(1..=5), &[b(1, 5), b(1, 3)], Counter(5), &realigning(5));
        assert_eq!(
            plan.recover,
            [
                (b(1, 3), vec![Counter(1), Counter(2), Counter(3)]),
                (b(1, 5), vec![Counter(4), Counter(5)])
            ]
        );
        assert!(plan.pack.is_empty());
    }

    #[test]
    fn a_changed_batch_size_realigns() {
        // Batches of 3 were written before; now the size is 5.
        let plan = plan_packing(
            &set(7..=15),
            &[b(1, 3), b(4, 6)],
            Counter(15),
            &realigning(5),
        );
        assert_eq!(plan.pack, [b(7, 10), b(11, 15)]);
        // The tail waits when incomplete.
        let plan = plan_packing(
            &set(7..=9),
            &[b(1, 3), b(4, 6)],
            Counter(15),
            &realigning(5),
        );
        assert!(plan.pack.is_empty());
        assert_eq!(plan.waiting, 3);
        // A batch covering the middle of a range blocks it.
        let plan = plan_packing(&set([1, 2, 5]), &[b(3, 4)], Counter(5), &realigning(5));
        assert_eq!(plan.blocked, [(b(1, 5), b(3, 4))]);
        assert!(plan.pack.is_empty());
        // An old batch reaching above the applied position: its loose copies and the
        // rest of the range are left alone.
        let plan = plan_packing(&set([1, 2, 3]), &[b(1, 3)], Counter(1), &realigning(5));
        assert_eq!(plan.beyond, 2);
        assert!(plan.recover.is_empty() && plan.pack.is_empty());
        assert_eq!(plan.waiting, 0);
        // A bigger old batch covering the whole range: nothing to do.
        let plan = plan_packing(&BTreeSet::new(), &[b(1, 10)], Counter(10), &realigning(5));
        assert_eq!(plan, PackPlan::default());
    }

    #[test]
    fn batch_size_one() {
        let plan = plan_packing(&set(1..=3), &[], Counter(2), &realigning(1));
        assert_eq!(plan.pack, [b(1, 1), b(2, 2)]);
        assert_eq!(plan.beyond, 1);
    }

    // ----- the manager's rules -----

    #[test]
    fn aligned_complete_runs_only() {
        let p = plan_packing(&set(1..=25), &[], Counter(24), &from_site_start(10));
        assert_eq!(p.pack, vec![b(1, 10), b(11, 20)]);
        assert!(p.recover.is_empty());
        // 20 is the newest: 11..=20 waits.
        let p = plan_packing(&set(1..=20), &[], Counter(19), &from_site_start(10));
        assert_eq!(p.pack, vec![b(1, 10)]);
        // A hole keeps its range loose.
        let mut s = set(1..=30);
        s.remove(&Counter(15));
        let p = plan_packing(&s, &[], Counter(29), &from_site_start(10));
        assert_eq!(p.pack, vec![b(1, 10)]);
    }

    #[test]
    fn a_site_starting_mid_range_gets_a_short_first_batch() {
        let p = plan_packing(&set(7..=31), &[], Counter(30), &from_site_start(10));
        assert_eq!(p.pack, vec![b(7, 10), b(11, 20), b(21, 30)]);
        // Later runs continue aligned after the batches.
        let p = plan_packing(
            &set(31..=45),
            &[b(7, 10), b(11, 20), b(21, 30)],
            Counter(44),
            &from_site_start(10),
        );
        assert_eq!(p.pack, vec![b(31, 40)]);
    }

    #[test]
    fn loose_copies_of_a_batch_are_recovered() {
        let p = plan_packing(&set(1..=12), &[b(1, 10)], Counter(11), &from_site_start(10));
        assert_eq!(
            p.recover,
            vec![(b(1, 10), set(1..=10).into_iter().collect())]
        );
        assert!(p.pack.is_empty());
    }

    // ----- where the two sides' rules differ -----

    #[test]
    fn the_first_batch_rule_decides_a_mid_range_start() {
        // A stream that starts at 3, batches of 5.
        let aligned = rules(5, FirstBatch::Aligned, PartlyCovered::LeaveLoose);
        let plan = plan_packing(&set(3..=12), &[], Counter(12), &aligned);
        assert_eq!((plan.pack, plan.waiting), (vec![b(6, 10)], 3 + 2));
        let at_start = rules(5, FirstBatch::AtStreamStart, PartlyCovered::PackTheRest);
        let plan = plan_packing(&set(3..=12), &[], Counter(12), &at_start);
        assert_eq!((plan.pack, plan.waiting), (vec![b(3, 5), b(6, 10)], 2));
        // The stream's start is its lowest batch once its first archives are packed: the
        // next range stays aligned.
        let plan = plan_packing(&set(6..=12), &[b(3, 5)], Counter(12), &at_start);
        assert_eq!((plan.pack, plan.waiting), (vec![b(6, 10)], 2));
        // A hole in the short first batch keeps it loose, as in any other batch.
        let plan = plan_packing(&set([3, 5, 6]), &[], Counter(6), &at_start);
        assert_eq!((plan.pack, plan.waiting), (vec![], 3));
        let plan = plan_packing(&set([3, 5, 6]), &[], Counter(6), &aligned);
        assert_eq!((plan.pack, plan.waiting), (vec![], 3));
    }

    #[test]
    fn the_partly_covered_rule_decides_after_a_size_change() {
        // Batches of 3 were written before; now the size is 5.
        let old = [b(1, 3), b(4, 6)];
        for first_batch in [FirstBatch::Aligned, FirstBatch::AtStreamStart] {
            let pack_rest = rules(5, first_batch, PartlyCovered::PackTheRest);
            let plan = plan_packing(&set(7..=15), &old, Counter(15), &pack_rest);
            assert_eq!(plan.pack, [b(7, 10), b(11, 15)], "{first_batch:?}");
            assert!(plan.blocked.is_empty(), "{first_batch:?}");
            let leave = rules(5, first_batch, PartlyCovered::LeaveLoose);
            let plan = plan_packing(&set(7..=15), &old, Counter(15), &leave);
            assert_eq!(plan.pack, [b(11, 15)], "{first_batch:?}");
            assert_eq!(plan.blocked, [(b(6, 10), b(4, 6))], "{first_batch:?}");
            assert_eq!(plan.waiting, 0, "{first_batch:?}");
            // A batch in the middle of a range blocks it under both rules.
            for partly_covered in [PartlyCovered::PackTheRest, PartlyCovered::LeaveLoose] {
                let r = rules(5, first_batch, partly_covered);
                let plan = plan_packing(&set([1, 2, 5]), &[b(3, 4)], Counter(5), &r);
                assert_eq!(plan.blocked, [(b(1, 5), b(3, 4))], "{r:?}");
                assert!(plan.pack.is_empty(), "{r:?}");
            }
        }
        // A site that started at 3 with batches of 2, now of 5: the rest of its first
        // range is packed from where its batches end.
        let r = rules(5, FirstBatch::AtStreamStart, PartlyCovered::PackTheRest);
        let plan = plan_packing(&set(5..=12), &[b(3, 4)], Counter(12), &r);
        assert_eq!(plan.pack, [b(5, 5), b(6, 10)]);
    }
}
