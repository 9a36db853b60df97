//! `slony-receiver status`: where the replica is, how far it is behind the provider, and
//! whether that is healthy. An operator reads the table; monitoring reads `--json` and the
//! exit code.
//!
//! Gathering is I/O, done once and concurrently: the replica's position from
//! `"_<cluster>".sl_archive_tracking`, the provider's newest archive over SSH (listing plus
//! the first few KB of that archive, for its creation time), and local facts (die file,
//! run lock, alert state, incoming directory). Everything after that (timestamps, lag,
//! health, exit code) is pure and unit-tested. A source that cannot be reached does not
//! stop the command: the status is printed with what is known, the rest shown as `-`
//! (`null` in JSON), and the exit code says what was unreachable.
//!
//! # Lag
//!
//! - `lag_archives`: newest counter on the provider minus the replica's counter (0 when
//!   the provider has nothing newer, including an empty provider directory).
//! - `lag_seconds`: like a replica's "seconds behind master": the creation time of the
//!   provider's newest archive minus the creation time of the replica's current one; 0
//!   when `lag_archives` is 0; unknown when the newest archive exists only inside a batch
//!   or either time cannot be read. Both times are wall-clock text written by the same
//!   slon: `at_created` is a `timestamp without time zone`, into which PostgreSQL stored
//!   the archive's literal with its zone dropped, so the zone of the provider's literal is
//!   dropped too and both are read as UTC.
//!
//! # JSON output (`--json`)
//!
//! One object, pretty-printed. Field names are stable (new fields may be added; none is
//! renamed or removed). Unknown values are `null`.
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `cluster` | string | Slony cluster name |
//! | `node` | string | this site's name |
//! | `counter` | int or null | last archive applied (`at_counter`) |
//! | `counter_created` | string or null | when the provider created it (`at_created`, as PostgreSQL prints it) |
//! | `counter_applied` | string or null | when it was applied here (`at_applied`) |
//! | `provider_newest` | int or null | newest counter on the provider (single archive or end of a batch) |
//! | `provider_newest_created` | string or null | its creation time, as written in its tracking call; null for a batch |
//! | `lag_archives` | int or null | archives the provider has that the replica has not applied |
//! | `lag_seconds` | int or null | seconds behind the provider (see above) |
//! | `paused` | bool | the die file is present |
//! | `die_file` | string | the die file's path |
//! | `running` | bool | a `pull` holds the run lock |
//! | `running_pid` | int or null | its pid |
//! | `waiting_local` | int or null | archives downloaded but not applied yet |
//! | `last_error` | object or null | the active `pull` failure: `key`, `message`, `since` and `last_seen` (RFC 3339, UTC), `runs`, `permanent` (it needs an operator; the daemon retries it slowly) |
//! | `database_error` | string or null | why the replica database could not be read |
//! | `provider_error` | string or null | why the provider could not be read |
//! | `max_lag_archives` | int | the configured threshold (`[status] max_lag_archives`) |
//! | `max_lag_secs` | int | the configured threshold (`[status] max_lag_secs`) |
//! | `healthy` | bool | true exactly when the exit code is 0 |
//! | `problems` | array of strings | why it is not healthy (empty when healthy) |
//! | `warnings` | array of strings | what works but should be changed, such as an old place still in use (`local.original_client_lock`). Reported only: it does not change `healthy` |
//! | `guard_missing` | array of strings or null | replicated tables (`schema.table`) without a working write guard (`slony-receiver guard check`); null when the database cannot be read. Reported only: it does not change `healthy` |
//!
//! # Exit codes
//!
//! 0 healthy (a pause alone is healthy: it is deliberate); [`exit::DATABASE`] the replica
//! database cannot be reached ([`exit::APPLY`] if it is reachable but not initialised);
//! [`exit::REMOTE`] the provider cannot be reached or listed; [`exit::UNHEALTHY`] a lag
//! above a threshold or an active `pull` failure.

use crate::alert::LastFailure;
use crate::config::{ReceiverConfig, StatusConfig};
use crate::exit;
use crate::provider::{Provider, RemoteError, RemoteFile};
use crate::pull::FailureClass;
use crate::replica::{Position, ReplicaError};
use serde::Serialize;
use slony_shared::archive::lex::string_literal;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::archive::ArchiveName;
use slony_shared::counter::Counter;
use slony_shared::time::{human_duration, parse_pg_timestamp, rfc3339};
use std::path::Path;

/// How much of the provider's newest archive is read to find its tracking call (the
/// header before it is a few hundred bytes).
const HEAD_BYTES: usize = 4096;

/// Runs `status`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig, json: bool) -> anyhow::Result<u8> {
    let (replica, provider, guard_missing) = tokio::join!(
        replica_position(cfg),
        provider_view(cfg),
        guard_missing(cfg)
    );
    let local = local_facts(cfg);
    let mut status = Status::build(cfg, replica, provider, local);
    status.guard_missing = guard_missing;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status.table());
    }
    Ok(status.exit_code)
}

/// Why the replica's position is unknown: the message and the exit-code family.
type Unknown = (String, FailureClass);

/// Reads the replica's position; never fails the command.
async fn replica_position(cfg: &ReceiverConfig) -> Result<Position, Unknown> {
    let described = |e: ReplicaError| (e.to_string(), e.class());
    let client = crate::replica::connect(cfg).await.map_err(described)?;
    crate::replica::read_position(&client, &cfg.cluster)
        .await
        .map_err(described)
}

/// The replicated tables without a working guard; `None` when unknown.
async fn guard_missing(cfg: &ReceiverConfig) -> Option<Vec<String>> {
    let client = crate::replica::connect(cfg).await.ok()?;
    match crate::guard::missing(&client, &cfg.cluster).await {
        Ok(missing) => Some(missing.into_iter().map(|(t, _)| t.to_string()).collect()),
        Err(e) => {
            tracing::debug!("cannot read the guard triggers: {e:#}");
            None
        }
    }
}

/// What the provider offers this site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProviderView {
    /// The newest counter, single archive or batch; `None` for an empty directory.
    newest: Option<Counter>,
    /// That archive's creation time as written in its tracking call.
    newest_created: Option<String>,
}

/// Lists the provider's site directory and reads the head of its newest single archive.
async fn provider_view(cfg: &ReceiverConfig) -> Result<ProviderView, String> {
    let dir = cfg.remote_site_dir();
    let node_id = cfg.slony_node_id;
    let provider = Provider::connect(&cfg.remote)
        .await
        .map_err(|e| e.to_string())?;
    provider.job(move |remote| {
        let files = remote.list(&dir)?;
        let Some(newest) = newest_on_provider(&files, node_id) else {
            return Ok(ProviderView::default());
        };
        let newest_created = newest.single.and_then(|name| {
            let path = format!("{dir}/{name}");
            match remote.read_head(&path, HEAD_BYTES) {
                Ok(head) => {
                    let created = created_from_head(&String::from_utf8_lossy(&head), name.counter);
                    if created.is_none() {
                        tracing::warn!(file = %path, "no archiveTracking_offline call for this counter in the first {HEAD_BYTES} bytes; its creation time is unknown");
                    }
                    created
                }
                // Housekeeping may have packed it since the listing: the time is unknown,
                // the counter still stands.
                Err(e) => {
                    tracing::warn!("{e}; the newest archive's creation time is unknown");
                    None
                }
            }
        });
        Ok::<_, RemoteError>(ProviderView {
            newest: Some(newest.counter),
            newest_created,
        })
    })
    .await
    .and_then(|view| view)
    .map_err(|e| e.to_string())
}

/// The newest counter in a provider listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Newest {
    /// The counter.
    counter: Counter,
    /// The single archive file holding it, if there is one (otherwise only a batch has it).
    single: Option<ArchiveName>,
}

/// Finds the newest counter among single archives and batches. Files in progress,
/// foreign names, non-regular files and archives of another Slony node (when `node_id`
/// is configured) are ignored: `pull` reports those; `status` only looks.
fn newest_on_provider(files: &[RemoteFile], node_id: Option<u32>) -> Option<Newest> {
    let mut newest: Option<Newest> = None;
    for f in files.iter().filter(|f| f.regular) {
        let candidate = match classify(&f.name) {
            Ok(Entry::Archive(a)) if node_id.is_none_or(|n| n == a.node_id) => Newest {
                counter: a.counter,
                single: Some(a),
            },
            Ok(Entry::Batch(b)) => Newest {
                counter: b.to,
                single: None,
            },
            _ => continue,
        };
        newest = Some(match newest {
            None => candidate,
            Some(n) if candidate.counter > n.counter => candidate,
            // The same counter as a single file and as a batch's end: keep the single,
            // whose head can be read.
            Some(n) if candidate.counter == n.counter && n.single.is_none() => candidate,
            Some(n) => n,
        });
    }
    newest
}

/// The creation time from the head of archive `counter`, if its tracking call is there
/// and names that counter.
fn created_from_head(head: &str, counter: Counter) -> Option<String> {
    let (c, created) = parse_tracking_call(head)?;
    (c.parse::<Counter>().ok()? == counter).then_some(created)
}

/// Finds `archiveTracking_offline('<counter>', '<timestamp>')` in the head of an archive
/// and returns the two literals, read as PostgreSQL reads them. `None` when the call is
/// absent or cut off.
fn parse_tracking_call(head: &str) -> Option<(String, String)> {
    const CALL: &str = "archiveTracking_offline(";
    let rest = &head[head.find(CALL)? + CALL.len()..];
    let (counter, rest) = string_literal(rest.trim_start())?;
    let rest = rest.trim_start().strip_prefix(',')?.trim_start();
    let (created, rest) = string_literal(rest)?;
    rest.trim_start()
        .starts_with(')')
        .then_some((counter, created))
}

/// How far the replica is behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Lag {
    /// Archives not applied yet.
    archives: Option<u64>,
    /// Seconds between the two archives' creation times.
    seconds: Option<u64>,
}

/// Computes the lag of a replica at `current` (created `current_created`) behind a
/// provider whose newest archive is `newest` (created `newest_created`).
///
/// An empty provider (`provider_listed` but no `newest`) has nothing to apply: no lag.
/// Clock oddities never give a negative lag; fractions of a second are dropped.
fn lag(
    current: Option<Counter>,
    current_created: Option<&str>,
    provider_listed: bool,
    newest: Option<Counter>,
    newest_created: Option<&str>,
) -> Lag {
    let Some(current) = current else {
        return Lag::default();
    };
    let archives = match newest {
        Some(n) => n.0.saturating_sub(current.0),
        None if provider_listed => 0,
        None => return Lag::default(),
    };
    let seconds = if archives == 0 {
        Some(0)
    } else {
        match (
            current_created.and_then(parse_pg_timestamp),
            newest_created.and_then(parse_pg_timestamp),
        ) {
            (Some(a), Some(b)) => Some((b.saturating_sub(a).max(0) / 1_000_000) as u64),
            _ => None,
        }
    };
    Lag {
        archives: Some(archives),
        seconds,
    }
}

/// The health verdict: the exit code and, when it is not 0, why.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    /// The exit code.
    code: u8,
    /// Why it is not healthy, one reason per entry.
    problems: Vec<String>,
}

/// Decides health from what was gathered. Unreachable sources decide the code first
/// (database, then provider), then thresholds and an active failure ([`exit::UNHEALTHY`]).
/// A lag exactly at a threshold is healthy; an unknown lag passes no threshold.
fn assess(
    replica: Option<(&str, FailureClass)>,
    provider_error: Option<&str>,
    lag: Lag,
    last_error: Option<&LastFailure>,
    limits: &StatusConfig,
) -> Health {
    let mut problems = Vec::new();
    let mut code = exit::OK;
    if let Some((message, class)) = replica {
        problems.push(format!("replica database: {message}"));
        code = match class {
            FailureClass::Database => exit::DATABASE,
            FailureClass::Apply => exit::APPLY,
            FailureClass::Remote => exit::REMOTE,
            FailureClass::Local => exit::LOCAL,
        };
    }
    if let Some(message) = provider_error {
        problems.push(format!("provider: {message}"));
        if code == exit::OK {
            code = exit::REMOTE;
        }
    }
    let mut unhealthy = false;
    if let Some(a) = lag.archives.filter(|a| *a > limits.max_lag_archives) {
        problems.push(format!(
            "lag of {a} archives is above max_lag_archives = {}",
            limits.max_lag_archives
        ));
        unhealthy = true;
    }
    let max_secs = limits.max_lag.as_secs();
    if let Some(s) = lag.seconds.filter(|s| *s > max_secs) {
        problems.push(format!(
            "lag of {s} s ({}) is above max_lag_secs = {max_secs}",
            human_duration(s)
        ));
        unhealthy = true;
    }
    if let Some(f) = last_error {
        let needs = if f.permanent {
            " (this needs an operator: waiting will not cure it, so the pull daemon retries only every 5 minutes to an hour)"
        } else {
            ""
        };
        problems.push(format!(
            "pull is failing since {}: {}{needs}",
            rfc3339(f.since),
            f.subject
        ));
        unhealthy = true;
    }
    if unhealthy && code == exit::OK {
        code = exit::UNHEALTHY;
    }
    Health { code, problems }
}

/// What works but should be changed: old places still in use.
fn warnings(cfg: &ReceiverConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(lock) = &cfg.local.original_client_lock {
        out.push(original_lock_warning(lock));
    }
    out
}

/// The warning about the original client's lock, shared with `check`.
pub fn original_lock_warning(lock: &Path) -> String {
    format!(
        "the original client's lock {} is taken too (local.original_client_lock): once get_slony_logs.pl no longer runs from cron here, remove the key (a --legacy-config always takes it: move to the TOML `slony-receiver migrate` writes)",
        lock.display()
    )
}

/// Facts read from local files.
#[derive(Debug, Clone)]
struct LocalFacts {
    /// The die file's path.
    die_file: String,
    /// The die file exists.
    paused: bool,
    /// The pid holding the run lock.
    running_pid: Option<u32>,
    /// Archives in the incoming directory.
    waiting_local: Option<u64>,
    /// The active failure from the alert state.
    last_error: Option<LastFailure>,
}

fn local_facts(cfg: &ReceiverConfig) -> LocalFacts {
    let die = cfg.die_file();
    LocalFacts {
        die_file: die.display().to_string(),
        paused: die.exists(),
        running_pid: slony_shared::lock::holder(&cfg.lock_file()),
        waiting_local: count_archives(&cfg.incoming_dir()),
        last_error: crate::alert::last_failure(&cfg.alert_state_file()),
    }
}

/// Archive files in `dir` (0 if it does not exist yet; `None` if it cannot be read).
fn count_archives(dir: &Path) -> Option<u64> {
    match std::fs::read_dir(dir) {
        Ok(rd) => Some(
            rd.filter_map(Result::ok)
                .filter(|e| {
                    matches!(
                        classify(&e.file_name().to_string_lossy()),
                        Ok(Entry::Archive(_))
                    )
                })
                .count() as u64,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), "cannot list the incoming directory: {e}");
            None
        }
    }
}

/// The active failure, as shown in the JSON.
#[derive(Debug, Clone, Serialize)]
struct ErrorJson {
    /// Stable failure key (for example `gap:124`).
    key: String,
    /// One line saying what failed.
    message: String,
    /// First run that saw it (RFC 3339, UTC).
    since: String,
    /// Latest run that saw it (RFC 3339, UTC).
    last_seen: String,
    /// How many runs saw it.
    runs: u64,
    /// It needs an operator: waiting does not cure it, and the pull daemon retries it
    /// only slowly (every 5 minutes, then up to every hour).
    permanent: bool,
}

/// The whole status; serialised as the `--json` object (field order is the output order).
#[derive(Debug, Clone, Serialize)]
struct Status {
    cluster: String,
    node: String,
    counter: Option<u64>,
    counter_created: Option<String>,
    counter_applied: Option<String>,
    provider_newest: Option<u64>,
    provider_newest_created: Option<String>,
    lag_archives: Option<u64>,
    lag_seconds: Option<u64>,
    paused: bool,
    die_file: String,
    running: bool,
    running_pid: Option<u32>,
    waiting_local: Option<u64>,
    last_error: Option<ErrorJson>,
    database_error: Option<String>,
    provider_error: Option<String>,
    max_lag_archives: u64,
    max_lag_secs: u64,
    healthy: bool,
    problems: Vec<String>,
    warnings: Vec<String>,
    guard_missing: Option<Vec<String>>,
    /// The exit code (not part of the JSON: the process's exit status carries it).
    #[serde(skip)]
    exit_code: u8,
}

impl Status {
    fn build(
        cfg: &ReceiverConfig,
        replica: Result<Position, Unknown>,
        provider: Result<ProviderView, String>,
        local: LocalFacts,
    ) -> Status {
        let (position, replica_error) = match replica {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        };
        let (view, provider_error) = match provider {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e)),
        };
        let lag = lag(
            position.as_ref().map(|p| p.counter),
            position.as_ref().and_then(|p| p.created.as_deref()),
            view.is_some(),
            view.as_ref().and_then(|v| v.newest),
            view.as_ref().and_then(|v| v.newest_created.as_deref()),
        );
        let health = assess(
            replica_error.as_ref().map(|(m, c)| (m.as_str(), *c)),
            provider_error.as_deref(),
            lag,
            local.last_error.as_ref(),
            &cfg.status,
        );
        Status {
            cluster: cfg.cluster.to_string(),
            node: cfg.node.to_string(),
            counter: position.as_ref().map(|p| p.counter.0),
            counter_created: position.as_ref().and_then(|p| p.created.clone()),
            counter_applied: position.as_ref().and_then(|p| p.applied.clone()),
            provider_newest: view.as_ref().and_then(|v| v.newest).map(|c| c.0),
            provider_newest_created: view.and_then(|v| v.newest_created),
            lag_archives: lag.archives,
            lag_seconds: lag.seconds,
            paused: local.paused,
            die_file: local.die_file,
            running: local.running_pid.is_some(),
            running_pid: local.running_pid,
            waiting_local: local.waiting_local,
            last_error: local.last_error.map(|f| ErrorJson {
                key: f.key,
                message: f.subject,
                since: rfc3339(f.since),
                last_seen: rfc3339(f.last_seen),
                runs: f.runs,
                permanent: f.permanent,
            }),
            database_error: replica_error.map(|(m, _)| m),
            provider_error,
            max_lag_archives: cfg.status.max_lag_archives,
            max_lag_secs: cfg.status.max_lag.as_secs(),
            healthy: health.code == exit::OK,
            problems: health.problems,
            warnings: warnings(cfg),
            guard_missing: None,
            exit_code: health.code,
        }
    }

    /// The human table: one fact per line, labels aligned, unknowns as `-`.
    fn table(&self) -> String {
        fn opt<T: ToString>(v: &Option<T>) -> String {
            v.as_ref().map_or_else(|| "-".into(), T::to_string)
        }
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let rows: Vec<(&str, String)> = vec![
            ("cluster", self.cluster.clone()),
            ("node", self.node.clone()),
            ("counter", opt(&self.counter)),
            ("  created", opt(&self.counter_created)),
            ("  applied", opt(&self.counter_applied)),
            ("provider newest", opt(&self.provider_newest)),
            ("  created", opt(&self.provider_newest_created)),
            ("lag (archives)", opt(&self.lag_archives)),
            (
                "lag (seconds)",
                match self.lag_seconds {
                    Some(s) if s >= 60 => format!("{s} ({})", human_duration(s)),
                    s => opt(&s),
                },
            ),
            (
                "paused",
                if self.paused {
                    format!("yes (die file {})", self.die_file)
                } else {
                    "no".into()
                },
            ),
            (
                "running",
                match self.running_pid {
                    Some(pid) => format!("yes (pid {pid})"),
                    None => yes_no(self.running).into(),
                },
            ),
            ("waiting locally", opt(&self.waiting_local)),
            (
                "last error",
                match &self.last_error {
                    Some(e) => format!(
                        "{} [{}], since {}, last seen {}, {} runs",
                        e.message, e.key, e.since, e.last_seen, e.runs
                    ),
                    None => "-".into(),
                },
            ),
            (
                "database",
                self.database_error.clone().unwrap_or_else(|| "ok".into()),
            ),
            (
                "provider",
                self.provider_error.clone().unwrap_or_else(|| "ok".into()),
            ),
            (
                "thresholds",
                format!(
                    "{} archives, {} s",
                    self.max_lag_archives, self.max_lag_secs
                ),
            ),
            (
                "guard",
                match &self.guard_missing {
                    None => "-".into(),
                    Some(m) if m.is_empty() => "ok (replicated tables refuse local writes)".into(),
                    Some(m) => format!(
                        "MISSING on {} (see `slony-receiver guard check`)",
                        m.join(", ")
                    ),
                },
            ),
            (
                "warnings",
                if self.warnings.is_empty() {
                    "-".into()
                } else {
                    self.warnings.join("; ")
                },
            ),
            (
                "health",
                if self.healthy {
                    "ok".into()
                } else {
                    format!("UNHEALTHY: {}", self.problems.join("; "))
                },
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:<width$}  {v}\n"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    const HEAD: &str = "------------------------------------------------------------------\n\
        -- Slony-I log shipping archive\n-- Node 1, Event 5000000025\n\
        ------------------------------------------------------------------\n\
        set session_replication_role to replica;\nstart transaction;\n\
        select \"_lab\".archiveTracking_offline('25', '2026-11-21 10:00:25.123456+00');\n\
        -- end of log archiving header\n";

    #[test]
    fn tracking_call_is_found_in_the_head() {
        assert_eq!(
            parse_tracking_call(HEAD),
            Some((
                "25".to_string(),
                "2026-11-21 10:00:25.123456+00".to_string()
            ))
        );
        assert_eq!(
            created_from_head(HEAD, Counter(25)).as_deref(),
            Some("2026-11-21 10:00:25.123456+00")
        );
        // Another counter than the file name's: not trusted.
        assert_eq!(created_from_head(HEAD, Counter(24)), None);
        // Spacing as older Slony versions write it.
        assert_eq!(
            parse_tracking_call(
                "select \"_x\".archiveTracking_offline( '7' ,'2020-01-01 00:00:00' );"
            ),
            Some(("7".to_string(), "2020-01-01 00:00:00".to_string()))
        );
    }

    #[test]
    fn cut_or_missing_tracking_call_is_none() {
        let cut = &HEAD[..HEAD.find("10:00:25").unwrap()];
        assert_eq!(parse_tracking_call(cut), None);
        assert_eq!(
            parse_tracking_call("-- Slony-I log shipping archive\n"),
            None
        );
        assert_eq!(parse_tracking_call("archiveTracking_offline('1')"), None);
        assert_eq!(parse_tracking_call("archiveTracking_offline(1, 2)"), None);
    }

    #[test]
    fn lag_in_archives_and_seconds() {
        let cur = Some("2026-11-21 10:00:10.123456");
        let new = Some("2026-11-21 10:00:25.123456+00");
        assert_eq!(
            lag(Some(Counter(10)), cur, true, Some(Counter(25)), new),
            Lag {
                archives: Some(15),
                seconds: Some(15)
            }
        );
        // Up to date (or the provider is behind): no lag, whatever the times say.
        for newest in [Counter(10), Counter(3)] {
            assert_eq!(
                lag(Some(Counter(10)), cur, true, Some(newest), None),
                Lag {
                    archives: Some(0),
                    seconds: Some(0)
                }
            );
        }
        // An empty provider directory has nothing to apply.
        assert_eq!(
            lag(Some(Counter(10)), cur, true, None, None),
            Lag {
                archives: Some(0),
                seconds: Some(0)
            }
        );
        // Newest only in a batch: the time is unknown.
        assert_eq!(
            lag(Some(Counter(10)), cur, true, Some(Counter(12)), None),
            Lag {
                archives: Some(2),
                seconds: None
            }
        );
        // A clock that went backwards never gives a negative lag; fractions are dropped.
        assert_eq!(
            lag(
                Some(Counter(10)),
                Some("2026-11-21 10:00:10.9"),
                true,
                Some(Counter(11)),
                Some("2026-11-21 10:00:05")
            )
            .seconds,
            Some(0)
        );
        assert_eq!(
            lag(
                Some(Counter(10)),
                Some("2026-11-21 10:00:10.9"),
                true,
                Some(Counter(11)),
                Some("2026-11-21 10:00:12.1")
            )
            .seconds,
            Some(1)
        );
        // Unknown replica or unreachable provider: unknown lag.
        assert_eq!(lag(None, None, true, Some(Counter(5)), new), Lag::default());
        assert_eq!(
            lag(Some(Counter(10)), cur, false, None, None),
            Lag::default()
        );
    }

    fn limits(archives: u64, secs: u64) -> StatusConfig {
        StatusConfig {
            max_lag_archives: archives,
            max_lag: Duration::from_secs(secs),
        }
    }

    fn lag_of(archives: u64, seconds: Option<u64>) -> Lag {
        Lag {
            archives: Some(archives),
            seconds,
        }
    }

    #[test]
    fn health_against_thresholds() {
        let l = limits(100, 3600);
        let ok = assess(None, None, lag_of(15, Some(15)), None, &l);
        assert_eq!(ok.code, exit::OK);
        assert!(ok.problems.is_empty());
        // Exactly at a threshold is still healthy.
        assert_eq!(
            assess(None, None, lag_of(100, Some(3600)), None, &l).code,
            exit::OK
        );
        let h = assess(None, None, lag_of(15, Some(15)), None, &limits(5, 3600));
        assert_eq!(h.code, exit::UNHEALTHY);
        assert_eq!(
            h.problems,
            vec!["lag of 15 archives is above max_lag_archives = 5".to_string()]
        );
        let h = assess(None, None, lag_of(2, Some(7200)), None, &l);
        assert_eq!(h.code, exit::UNHEALTHY);
        assert!(h.problems[0].contains("7200 s (2h)"), "{:?}", h.problems);
        // Unknown seconds pass no threshold.
        assert_eq!(assess(None, None, lag_of(2, None), None, &l).code, exit::OK);
    }

    #[test]
    fn active_failure_and_unreachable_sources() {
        let l = limits(100, 3600);
        let failure = LastFailure {
            key: "gap:11".into(),
            subject: "pull failed: archive 11 is missing".into(),
            since: UNIX_EPOCH + Duration::from_secs(1_795_298_803),
            last_seen: UNIX_EPOCH + Duration::from_secs(1_795_298_903),
            runs: 2,
            permanent: false,
        };
        let h = assess(None, None, lag_of(0, Some(0)), Some(&failure), &l);
        assert_eq!(h.code, exit::UNHEALTHY);
        assert_eq!(
            h.problems,
            vec![
                "pull is failing since 2026-11-21T22:06:43Z: pull failed: archive 11 is missing"
                    .to_string()
            ]
        );
        let permanent = LastFailure {
            permanent: true,
            ..failure.clone()
        };
        let h = assess(None, None, lag_of(0, Some(0)), Some(&permanent), &l);
        assert!(
            h.problems[0].ends_with("(this needs an operator: waiting will not cure it, so the pull daemon retries only every 5 minutes to an hour)"),
            "{:?}",
            h.problems
        );
        // Unreachable sources decide the code, database first; other problems are listed.
        let h = assess(
            Some(("cannot connect", FailureClass::Database)),
            Some("cannot connect to 127.0.0.1:22"),
            Lag::default(),
            Some(&failure),
            &l,
        );
        assert_eq!(h.code, exit::DATABASE);
        assert_eq!(h.problems.len(), 3);
        let h = assess(None, Some("refused"), lag_of(500, None), None, &l);
        assert_eq!(h.code, exit::REMOTE);
        assert_eq!(
            assess(
                Some(("not initialised", FailureClass::Apply)),
                None,
                Lag::default(),
                None,
                &l
            )
            .code,
            exit::APPLY
        );
    }

    fn file(name: &str, regular: bool) -> RemoteFile {
        RemoteFile {
            name: name.into(),
            size: 1,
            regular,
            symlink: !regular,
            mtime: None,
        }
    }

    #[test]
    fn newest_counter_on_the_provider() {
        let a = |c: u64| format!("slony1_log_2_{c:020}.sql");
        assert_eq!(newest_on_provider(&[], None), None);
        let files = vec![
            file("slony_logs_1-50.tar.gz", true),
            file(&a(51), true),
            file(&a(52), true),
            file(&format!("{}.tmp", a(53)), true),
            file(&a(60), false),
            file("README", true),
            file("slony1_log_bogus.sql", true),
        ];
        let n = newest_on_provider(&files, None).unwrap();
        assert_eq!(n.counter, Counter(52));
        assert_eq!(n.single.map(|s| s.to_string()), Some(a(52)));
        // Another node's archives are ignored when the node id is configured.
        assert_eq!(
            newest_on_provider(&files, Some(3)).unwrap().counter,
            Counter(50)
        );
        // Newest only in a batch; a single with the same counter is preferred.
        let files = vec![file(&a(5), true), file("slony_logs_1-9.tar.gz", true)];
        assert_eq!(
            newest_on_provider(&files, None),
            Some(Newest {
                counter: Counter(9),
                single: None
            })
        );
        let files = vec![file("slony_logs_1-9.tar.gz", true), file(&a(9), true)];
        assert!(newest_on_provider(&files, None).unwrap().single.is_some());
    }
}
