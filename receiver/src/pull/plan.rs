//! Deciding what to fetch: a pure function of the replica's counter, the archives already
//! downloaded, and the provider's listing. No I/O here, so every case is unit-tested.

use slony_shared::archive::{ArchiveName, BatchName};
use slony_shared::counter::Counter;
use std::collections::BTreeMap;

/// Where the next archive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Already downloaded and waiting in the local incoming directory.
    Local(ArchiveName),
    /// A single archive file on the provider.
    Remote(ArchiveName),
    /// A tar.gz batch on the provider; only its members after `after` are needed.
    Batch {
        /// The batch.
        batch: BatchName,
        /// Members up to and including this counter are already applied.
        after: Counter,
    },
}

/// The work of one run, in counter order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// What to fetch (or take from disk), in order.
    pub sources: Vec<Source>,
    /// The counter the replica reaches when every source is applied.
    pub reaches: Counter,
    /// The first missing counter, when later archives exist: the stream has a gap.
    pub gap: Option<Gap>,
    /// The Slony node every archive must come from (configured, or the next archive's),
    /// batch members included.
    pub node: Option<u32>,
}

/// A hole in the provider's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The counter nobody has.
    pub missing: Counter,
    /// The next counter that does exist.
    pub next_available: Counter,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two different files claim the same counter.
    #[error("the provider lists two archives with counter {counter}: {first} and {second}; remove the wrong one on the provider")]
    Duplicate {
        /// The counter.
        counter: Counter,
        /// One file.
        first: String,
        /// The other file.
        second: String,
    },
    /// An archive written by a different Slony node than expected.
    #[error("archive {name} was written by Slony node {found}, but this site expects node {expected}; check slony_node_id or the provider's site directory")]
    WrongNode {
        /// The file.
        name: String,
        /// Its node id.
        found: u32,
        /// The expected node id.
        expected: u32,
    },
}

/// What the provider offers.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Single archive files.
    pub archives: Vec<ArchiveName>,
    /// Batches.
    pub batches: Vec<BatchName>,
}

/// Computes the plan for a replica at `current`.
///
/// `node_id` is the configured Slony node id; when `None`, all archives must agree on one.
pub fn plan(
    current: Counter,
    local: &[ArchiveName],
    remote: &Listing,
    node_id: Option<u32>,
) -> Result<Plan, PlanError> {
    // Without a configured node, the next archive to apply sets it (not whichever the
    // listing happens to name first), so a stray file is the one reported.
    let expected = node_id.or_else(|| {
        remote
            .archives
            .iter()
            .chain(local)
            .filter(|a| a.counter > current)
            .min_by_key(|a| a.counter)
            .map(|a| a.node_id)
    });
    let mut singles: BTreeMap<Counter, ArchiveName> = BTreeMap::new();
    for a in remote.archives.iter() {
        if let Some(prev) = singles.insert(a.counter, *a) {
            return Err(PlanError::Duplicate {
                counter: a.counter,
                first: prev.to_string(),
                second: a.to_string(),
            });
        }
    }
    let mut locals: BTreeMap<Counter, ArchiveName> = BTreeMap::new();
    for a in local {
        locals.insert(a.counter, *a);
    }
    for a in singles.values().chain(locals.values()) {
        if a.counter <= current {
            continue;
        }
        if let Some(exp) = expected {
            if a.node_id != exp {
                return Err(PlanError::WrongNode {
                    name: a.to_string(),
                    found: a.node_id,
                    expected: exp,
                });
            }
        }
    }

    let mut sources = Vec::new();
    let mut next = current.next();
    loop {
        if let Some(a) = locals.get(&next) {
            sources.push(Source::Local(*a));
            next = next.next();
        } else if let Some(a) = singles.get(&next) {
            sources.push(Source::Remote(*a));
            next = next.next();
        } else if let Some(b) = remote
            .batches
            .iter()
            .filter(|b| b.contains(next))
            .max_by_key(|b| b.to)
        {
            sources.push(Source::Batch {
                batch: *b,
                after: Counter(next.0 - 1),
            });
            next = b.to.next();
        } else {
            break;
        }
    }
    let reaches = Counter(next.0 - 1);
    let later = singles
        .keys()
        .chain(locals.keys())
        .copied()
        .chain(remote.batches.iter().map(|b| b.from.max(next)))
        .filter(|c| *c > next)
        .min();
    let gap = later.map(|n| Gap {
        missing: next,
        next_available: n,
    });
    Ok(Plan {
        sources,
        reaches,
        gap,
        node: expected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(c: u64) -> ArchiveName {
        ArchiveName {
            counter: Counter(c),
            node_id: 2,
        }
    }

    fn b(from: u64, to: u64) -> BatchName {
        BatchName::new(Counter(from), Counter(to))
    }

    fn listing(archives: &[u64], batches: &[(u64, u64)]) -> Listing {
        Listing {
            archives: archives.iter().map(|c| a(*c)).collect(),
            batches: batches.iter().map(|(f, t)| b(*f, *t)).collect(),
        }
    }

    #[test]
    fn nothing_new() {
        let p = plan(Counter(5), &[], &listing(&[3, 4, 5], &[(1, 2)]), None).unwrap();
        assert_eq!(
            p,
            Plan {
                sources: vec![],
                reaches: Counter(5),
                gap: None,
                node: None
            }
        );
    }

    #[test]
    fn singles_in_order_after_the_counter() {
        let p = plan(Counter(2), &[], &listing(&[5, 1, 3, 4, 2], &[]), None).unwrap();
        assert_eq!(
            p.sources,
            vec![
                Source::Remote(a(3)),
                Source::Remote(a(4)),
                Source::Remote(a(5))
            ]
        );
        assert_eq!(p.reaches, Counter(5));
        assert_eq!(p.gap, None);
    }

    #[test]
    fn batches_then_singles_and_partial_batches() {
        let p = plan(
            Counter(3),
            &[],
            &listing(&[11, 12], &[(1, 5), (6, 10)]),
            None,
        )
        .unwrap();
        assert_eq!(
            p.sources,
            vec![
                Source::Batch {
                    batch: b(1, 5),
                    after: Counter(3)
                },
                Source::Batch {
                    batch: b(6, 10),
                    after: Counter(5)
                },
                Source::Remote(a(11)),
                Source::Remote(a(12)),
            ]
        );
        assert_eq!(p.reaches, Counter(12));
    }

    #[test]
    fn local_downloads_are_used_first() {
        let p = plan(Counter(0), &[a(1), a(2)], &listing(&[1, 2, 3], &[]), None).unwrap();
        assert_eq!(
            p.sources,
            vec![
                Source::Local(a(1)),
                Source::Local(a(2)),
                Source::Remote(a(3))
            ]
        );
    }

    #[test]
    fn gap_is_named() {
        let p = plan(Counter(1), &[], &listing(&[2, 3, 5, 6], &[]), None).unwrap();
        assert_eq!(p.reaches, Counter(3));
        assert_eq!(
            p.gap,
            Some(Gap {
                missing: Counter(4),
                next_available: Counter(5)
            })
        );
        let p = plan(Counter(0), &[], &listing(&[], &[(3, 9)]), None).unwrap();
        assert!(p.sources.is_empty());
        assert_eq!(
            p.gap,
            Some(Gap {
                missing: Counter(1),
                next_available: Counter(3)
            })
        );
    }

    #[test]
    fn duplicates_and_foreign_nodes_are_refused() {
        let mut l = listing(&[1, 2], &[]);
        l.archives.push(ArchiveName {
            counter: Counter(2),
            node_id: 3,
        });
        assert!(matches!(
            plan(Counter(0), &[], &l, None),
            Err(PlanError::Duplicate { .. })
        ));
        let l = listing(&[1, 2], &[]);
        assert!(matches!(
            plan(Counter(0), &[], &l, Some(7)),
            Err(PlanError::WrongNode { .. })
        ));
        let mut l = listing(&[1], &[]);
        l.archives.push(ArchiveName {
            counter: Counter(2),
            node_id: 3,
        });
        assert!(matches!(
            plan(Counter(0), &[], &l, None),
            Err(PlanError::WrongNode { .. })
        ));
    }

    #[test]
    fn the_stray_node_is_the_one_reported_whatever_the_listing_order() {
        // The stray file listed first must not become the node everything is judged by.
        let mut l = listing(&[], &[]);
        l.archives.push(ArchiveName {
            counter: Counter(5),
            node_id: 3,
        });
        l.archives.extend(listing(&[4, 6], &[]).archives);
        assert_eq!(
            plan(Counter(3), &[], &l, None),
            Err(PlanError::WrongNode {
                name: "slony1_log_3_00000000000000000005.sql".into(),
                found: 3,
                expected: 2,
            })
        );
    }
}
