//! What one site receives: its tables and its sequences, from its stored lists.

use crate::ident::QualifiedTable;
use std::collections::{HashMap, HashSet};

/// The tables and sequences one site receives.
///
/// Both come from the site's stored lists: `<subscribers_dir>/<node>/tables`, and
/// `<subscribers_dir>/<node>/sequences`, which the manager decides from the provider's
/// catalog when the site subscribes (the sequences of the Slony sets that the site's
/// tables own or use in a default). A sequence is never taken for a site's because of
/// its name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteFilter {
    /// schema → the site's tables in that schema.
    tables: HashMap<String, HashSet<String>>,
    /// schema → the site's sequences in that schema.
    sequences: HashMap<String, HashSet<String>>,
}

fn by_schema<S: Into<String>, N: Into<String>>(
    entries: impl IntoIterator<Item = (S, N)>,
) -> HashMap<String, HashSet<String>> {
    let mut out: HashMap<String, HashSet<String>> = HashMap::new();
    for (s, n) in entries {
        out.entry(s.into()).or_default().insert(n.into());
    }
    out
}

impl SiteFilter {
    /// A filter for the tables `(schema, name)`, exactly as PostgreSQL spells them (case
    /// sensitive, unquoted), and no sequence.
    pub fn new<S: Into<String>, N: Into<String>>(tables: impl IntoIterator<Item = (S, N)>) -> Self {
        SiteFilter {
            tables: by_schema(tables),
            sequences: HashMap::new(),
        }
    }

    /// The same filter with the sequences `(schema, name)` as well (spelled as in
    /// [`SiteFilter::new`]).
    #[must_use]
    pub fn with_sequences<S: Into<String>, N: Into<String>>(
        mut self,
        sequences: impl IntoIterator<Item = (S, N)>,
    ) -> Self {
        for (s, n) in by_schema(sequences) {
            self.sequences.entry(s).or_default().extend(n);
        }
        self
    }

    /// A filter from a site's stored lists: its tables (`<node>/tables`) and its
    /// sequences (`<node>/sequences`), both `schema.name`.
    pub fn from_lists(tables: &[QualifiedTable], sequences: &[QualifiedTable]) -> Self {
        Self::new(tables.iter().map(|t| (t.schema.clone(), t.table.clone()))).with_sequences(
            sequences
                .iter()
                .map(|q| (q.schema.clone(), q.table.clone())),
        )
    }

    /// Whether the site's table list holds `schema.name`.
    pub fn has_table(&self, schema: &str, name: &str) -> bool {
        self.tables
            .get(schema)
            .is_some_and(|names| names.contains(name))
    }

    /// Whether the site's sequence list holds `schema.seq`. Only the list counts: a
    /// sequence called after one of the site's tables is not the site's for that.
    pub fn has_sequence(&self, schema: &str, seq: &str) -> bool {
        self.sequences
            .get(schema)
            .is_some_and(|names| names.contains(seq))
    }

    /// Whether both lists are empty (the site still gets every counter, envelope only).
    pub fn is_empty(&self) -> bool {
        self.tables.values().all(HashSet::is_empty)
            && self.sequences.values().all(HashSet::is_empty)
    }
}
