//! Promotion: the replica becomes a writable database, on purpose and for good (see
//! `slony-receiver promote`). The marker `<site_dir>/PROMOTED` records it; `pull` and
//! `guard on` refuse while it exists.

use crate::config::ReceiverConfig;
use crate::guard;
use crate::replica::Position;
use anyhow::Context;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::counter::Counter;
use slony_shared::ident::{quote_ident, quote_literal};
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_postgres::Client;

/// The marker's file name in the site directory.
pub const MARKER: &str = "PROMOTED";

/// `<site_dir>/PROMOTED`.
pub fn marker_path(cfg: &ReceiverConfig) -> PathBuf {
    cfg.site_dir().join(MARKER)
}

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// When the replica was promoted (RFC 3339, UTC, from the database's clock).
    pub promoted_at: String,
    /// The last archive applied before the promotion.
    pub counter: String,
    /// When the provider created that archive (`at_created`).
    pub counter_created: String,
}

impl Marker {
    /// The marker file's text.
    fn render(&self, cfg: &ReceiverConfig) -> String {
        format!(
            "# slony-receiver promote: this replica was promoted to a writable database.\n\
             # pull refuses to run while this file exists. Remove it only if you re-initialise\n\
             # the replica (a new database bootstrapped with subscribe-series).\n\
             promoted_at={}\ncounter={}\ncounter_created={}\ncluster={}\nnode={}\n",
            self.promoted_at, self.counter, self.counter_created, cfg.cluster, cfg.node
        )
    }

    /// Reads the marker's fields; a damaged marker still means "promoted" (its fields
    /// then read `unknown`).
    fn parse(text: &str) -> Marker {
        let field = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "unknown".into())
        };
        Marker {
            promoted_at: field("promoted_at"),
            counter: field("counter"),
            counter_created: field("counter_created"),
        }
    }
}

/// The marker, if this replica was promoted.
pub fn read_marker(cfg: &ReceiverConfig) -> anyhow::Result<Option<Marker>> {
    let path = marker_path(cfg);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(Marker::parse(&String::from_utf8_lossy(&bytes)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| {
            format!(
                "reading {} (whether this replica was promoted)",
                path.display()
            )
        }),
    }
}

/// For `pull`: when the replica was promoted, why pull must not run (the caller exits
/// [`crate::exit::PROMOTED`]). A marker that cannot be read also stops pull: better a
/// stopped pull than archives applied to a promoted database.
pub fn refusal(cfg: &ReceiverConfig) -> Option<String> {
    let path = marker_path(cfg);
    let (at, counter) = match read_marker(cfg) {
        Ok(None) => return None,
        Ok(Some(m)) => (m.promoted_at, m.counter),
        Err(e) => {
            tracing::error!("{e:#}");
            ("an unknown date".into(), "unknown".into())
        }
    };
    Some(format!(
        "this replica was promoted on {at} at archive {counter}; pull will not run again (remove {} only if you re-initialise the replica)",
        path.display()
    ))
}

/// What [`promote`] found or did.
pub enum Promotion {
    /// Promoted earlier (this marker); a guard left over by an interrupted run was
    /// removed from these tables.
    Already {
        /// The marker.
        marker: Marker,
        /// Tables whose guard was removed now.
        removed: Vec<String>,
    },
    /// A subscription request is in progress (its state file): not promoted.
    SubscriptionInProgress(PathBuf),
    /// Promoted now.
    Done(Promoted),
}

/// What a promotion did, for the operator's report.
pub struct Promoted {
    /// The marker written.
    pub marker: Marker,
    /// The replica's position at the promotion.
    pub position: Position,
    /// Tables whose guard was removed.
    pub removed: Vec<String>,
    /// Sequences behind their key columns, each with the statement that fixes it.
    pub sequences: Vec<String>,
    /// Archives downloaded but not applied.
    pub waiting: Vec<Counter>,
}

/// Promotes the replica (steps 2 to 4 of the module doc), for a caller holding the run
/// lock.
///
/// # Errors
///
/// The database cannot be read, or the marker cannot be written; or the guard could not
/// be removed after the marker was written (then running promote again finishes it).
pub async fn promote(cfg: &ReceiverConfig) -> anyhow::Result<Promotion> {
    crate::local::prepare_dirs(cfg)?;
    let mut client = crate::replica::connect(cfg).await?;
    let position = crate::replica::read_position(&client, &cfg.cluster).await?;
    if let Some(marker) = read_marker(cfg)? {
        // Finish an interrupted earlier run.
        let removed = guard::disable(&mut client, &cfg.cluster, None).await?;
        return Ok(Promotion::Already { marker, removed });
    }
    let state = cfg.site_dir().join("subscribe_state.json");
    if state.exists() {
        return Ok(Promotion::SubscriptionInProgress(state));
    }
    let promoted_at: String = client
        .query_one(
            "SELECT pg_catalog.to_char(pg_catalog.clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading the database clock: {}", slony_shared::pg::describe_error(&e)))?
        .get(0);
    let marker = Marker {
        promoted_at,
        counter: position.counter.to_string(),
        counter_created: position.created.clone().unwrap_or_else(|| "unknown".into()),
    };
    let marker_file = marker_path(cfg);
    write_marker(&marker_file, &marker.render(cfg))?;
    tracing::info!(counter = position.counter.0, marker = %marker_file.display(), "replica promoted");
    let removed = guard::disable(&mut client, &cfg.cluster, None)
        .await
        .context("the replica is marked promoted (pull will not run again), but removing the guard failed; run promote again")?;
    let sequences = sequences_behind(&client, cfg)
        .await
        .unwrap_or_else(|e| vec![format!("could not check the sequences: {e:#}")]);
    let waiting = waiting_archives(&cfg.incoming_dir(), position.counter);
    Ok(Promotion::Done(Promoted {
        marker,
        position,
        removed,
        sequences,
        waiting,
    }))
}

/// Writes the marker durably: temp file, fsync, rename, fsync of the directory.
fn write_marker(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = slony_shared::private::create(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

/// Sequences feeding an integer column of a replicated table whose next value is not
/// above the column's largest value: the first insert would fail (or reuse a key).
async fn sequences_behind(client: &Client, cfg: &ReceiverConfig) -> anyhow::Result<Vec<String>> {
    let tables = guard::replicated_tables(client, &cfg.cluster).await?;
    let rows = client
        .query(
            "SELECT sn.nspname::text, s.relname::text, tn.nspname::text, t.relname::text,
                    a.attname::text, q.seqincrement
               FROM pg_catalog.pg_attrdef d
               JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
               JOIN pg_catalog.pg_class t ON t.oid = d.adrelid
               JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
               JOIN pg_catalog.pg_depend dep
                    ON dep.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass
                   AND dep.objid = d.oid
                   AND dep.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
               JOIN pg_catalog.pg_class s ON s.oid = dep.refobjid AND s.relkind = 'S'
               JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
               JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid
              WHERE NOT a.attisdropped AND q.seqincrement > 0
                AND a.atttypid IN ('pg_catalog.int2'::pg_catalog.regtype, 'pg_catalog.int4'::pg_catalog.regtype,
                                   'pg_catalog.int8'::pg_catalog.regtype, 'pg_catalog.numeric'::pg_catalog.regtype)
              ORDER BY 3, 4, 5",
            &[],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", slony_shared::pg::describe_error(&e)))?;
    let mut behind = Vec::new();
    for row in rows {
        let (seq_schema, seq, schema, table, column, increment): (
            String,
            String,
            String,
            String,
            String,
            i64,
        ) = (
            row.get(0),
            row.get(1),
            row.get(2),
            row.get(3),
            row.get(4),
            row.get(5),
        );
        if !tables
            .tables
            .iter()
            .any(|t| t.schema == schema && t.table == table)
        {
            continue;
        }
        let seq_q = format!("{}.{}", quote_ident(&seq_schema), quote_ident(&seq));
        let table_q = format!("{}.{}", quote_ident(&schema), quote_ident(&table));
        let col_q = quote_ident(&column);
        let check = client
            .query_one(
                &format!(
                    "SELECT x.m::text, s.last_value::text,
                            x.m IS NOT NULL AND x.m >= CASE WHEN s.is_called THEN s.last_value::numeric + $1::int8 ELSE s.last_value::numeric END
                       FROM (SELECT max({col_q})::numeric AS m FROM ONLY {table_q}) x, {seq_q} s"
                ),
                &[&increment],
            )
            .await
            .map_err(|e| anyhow::anyhow!("{seq_schema}.{seq}: {}", slony_shared::pg::describe_error(&e)))?;
        let (max, last, is_behind): (Option<String>, String, bool) =
            (check.get(0), check.get(1), check.get(2));
        if is_behind {
            behind.push(format!(
                "sequence {seq_schema}.{seq} is at {last} but {schema}.{table}.{column} already holds {}: run SELECT pg_catalog.setval({}, (SELECT max({col_q}) FROM {table_q}));",
                max.unwrap_or_default(),
                quote_literal(&seq_q),
            ));
        }
    }
    Ok(behind)
}

/// Archives downloaded but never applied (counters after `at`).
fn waiting_archives(dir: &Path, at: Counter) -> Vec<Counter> {
    let mut v: Vec<Counter> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| match classify(&e.file_name().to_string_lossy()) {
                    Ok(Entry::Archive(a)) if a.counter > at => Some(a.counter),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_fields_round_trip_and_damage_reads_unknown() {
        let m = Marker::parse(
            "# comment\npromoted_at=2026-11-22T01:02:03Z\ncounter=30\ncounter_created=2026-11-21 10:00:30.123456\n",
        );
        assert_eq!(m.promoted_at, "2026-11-22T01:02:03Z");
        assert_eq!(m.counter, "30");
        assert_eq!(m.counter_created, "2026-11-21 10:00:30.123456");
        let damaged = Marker::parse("garbage");
        assert_eq!(damaged.promoted_at, "unknown");
        assert_eq!(damaged.counter, "unknown");
    }

    #[test]
    fn waiting_archives_are_those_after_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        for c in [3u64, 5, 6] {
            std::fs::write(dir.path().join(format!("slony1_log_2_{c:020}.sql")), "").unwrap();
        }
        std::fs::write(dir.path().join("README"), "").unwrap();
        assert_eq!(
            waiting_archives(dir.path(), Counter(4)),
            vec![Counter(5), Counter(6)]
        );
        assert!(waiting_archives(&dir.path().join("missing"), Counter(0)).is_empty());
    }
}
