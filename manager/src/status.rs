/*!
`slony-manager status`: the sites, their tables and sequences, the requests in progress
and the newest archive in each site's directory. Read-only: it takes no lock and can run
beside the daemon.
*/

use crate::config::ManagerConfig;
use crate::request::{Record, RequestState};
use crate::site;
use serde::Serialize;
use slony_shared::archive::name::{classify, Entry};
use slony_shared::ident::NodeName;
use slony_shared::trigger::TriggerKind;
use std::path::Path;

/// One subscribed site.
#[derive(Debug, Serialize)]
struct SiteStatus {
    /// Site name.
    name: String,
    /// Its tables (empty if the list is unreadable).
    tables: Vec<String>,
    /// How many.
    table_count: usize,
    /// Its sequences; `None` when the site directory has no sequence list (written by an
    /// older version) or it is unreadable.
    sequences: Option<Vec<String>>,
    /// How many (`None` as above).
    sequence_count: Option<usize>,
    /// First counter the list applies to, if recorded.
    since: Option<u64>,
    /// Newest archive counter in `<site_log_dir>/<node>/` (files and batches).
    newest_archive: Option<u64>,
    /// Last counter the cutter cut for the site (`cut_counter`), if it runs.
    cut_counter: Option<u64>,
    /// Last counter the site acknowledged having applied (`applied_counter`), if any.
    acknowledged: Option<u64>,
    /// Why the table or sequence list could not be read.
    error: Option<String>,
    /// Something the operator should do: a site without a sequence list gets no
    /// sequence changes until it subscribes again.
    warning: Option<String>,
}

/// One request in progress.
#[derive(Debug, Serialize)]
struct RequestStatus {
    node: String,
    state: String,
    new_site: Option<bool>,
    counter: Option<u64>,
    reason: Option<String>,
    accepted_at: Option<u64>,
    updated_at: Option<u64>,
    error: Option<String>,
}

/// The whole report.
#[derive(Debug, Serialize)]
struct Report {
    cluster: String,
    sites: Vec<SiteStatus>,
    requests: Vec<RequestStatus>,
    /// Request files not taken yet (incomplete, or waiting for the site's current request).
    waiting_triggers: Vec<String>,
    /// What weakens the separation of the sites: shared accounts (`allow_shared_account`),
    /// groups that admit another site, subscribed sites that are not registered.
    warnings: Vec<String>,
}

/// Prints the report; returns the exit code (0).
///
/// # Errors
///
/// The subscribers directory cannot be listed.
pub fn run(cfg: &ManagerConfig, json: bool) -> anyhow::Result<u8> {
    let report = collect(cfg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(0)
}

/// Reads everything the report shows: the sites, the requests, what waits, what weakens.
fn collect(cfg: &ManagerConfig) -> anyhow::Result<Report> {
    let mut sites = Vec::new();
    let mut requests = Vec::new();
    let mut ack_refused = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&cfg.subscribers_dir)
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", cfg.subscribers_dir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    for name in &names {
        let path = cfg.subscribers_dir.join(name);
        if let Ok(node) = NodeName::new(name) {
            if path.is_dir() {
                sites.push(site_status(cfg, &node, &path, &mut ack_refused));
            }
        } else if let Some(node) = name
            .strip_suffix(".request.json")
            .and_then(|n| NodeName::new(n).ok())
        {
            requests.extend(request_status(&node, &path));
        }
    }
    Ok(Report {
        cluster: cfg.cluster.to_string(),
        waiting_triggers: waiting_triggers(cfg),
        warnings: warnings(cfg, &sites, ack_refused),
        sites,
        requests,
    })
}

/// One site's lists and positions, read from `<subscribers_dir>/<node>/` (`path`). An
/// acknowledgement that is refused goes into `ack_refused`.
fn site_status(
    cfg: &ManagerConfig,
    node: &NodeName,
    path: &Path,
    ack_refused: &mut Vec<String>,
) -> SiteStatus {
    let (tables, mut error) = match site::read_tables(path) {
        Ok(t) => (t.unwrap_or_default(), None),
        Err(e) => (Vec::new(), Some(format!("{e:#}"))),
    };
    let mut warning = None;
    let sequences = match site::read_sequences(path) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            warning = Some(site::no_sequence_list_warning(node, path));
            None
        }
        Err(e) => {
            let e = format!("{e:#}");
            error = Some(match error {
                Some(first) => format!("{first}; {e}"),
                None => e,
            });
            None
        }
    };
    SiteStatus {
        name: node.to_string(),
        table_count: tables.len(),
        tables: tables.iter().map(ToString::to_string).collect(),
        sequence_count: sequences.as_ref().map(Vec::len),
        sequences: sequences.map(|s| s.iter().map(ToString::to_string).collect()),
        since: site::read_since(path).map(|c| c.0),
        newest_archive: newest_archive(&cfg.site_log_dir(node)),
        cut_counter: crate::cutter::read_cut_counter(path)
            .ok()
            .flatten()
            .map(|c| c.0),
        acknowledged: match crate::housekeeping::read_ack(cfg, node) {
            Ok(c) => c.map(|c| c.0),
            Err(why) => {
                ack_refused.push(format!("site {node}: {why}"));
                None
            }
        },
        error,
        warning,
    }
}

/// The request of `<node>.request.json` (`path`); `None` once it is gone.
fn request_status(node: &NodeName, path: &Path) -> Option<RequestStatus> {
    Some(match Record::load(path, node) {
        Ok(Some(r)) => {
            let (counter, reason) = match &r.state {
                RequestState::Published { counter, .. } => (Some(*counter), None),
                RequestState::Finishing { reason, .. } => (None, reason.clone()),
                RequestState::Rejected { reason } => (None, Some(reason.clone())),
                RequestState::Generating => (None, None),
            };
            RequestStatus {
                node: node.to_string(),
                state: r.state.name().to_string(),
                new_site: Some(r.new_site),
                counter,
                reason,
                accepted_at: Some(r.accepted_at),
                updated_at: Some(r.updated_at),
                error: None,
            }
        }
        Ok(None) => return None,
        Err(e) => RequestStatus {
            node: node.to_string(),
            state: "damaged".into(),
            new_site: None,
            counter: None,
            reason: None,
            accepted_at: None,
            updated_at: None,
            error: Some(format!("{e:#}")),
        },
    })
}

/// The request files of registered sites not taken yet.
fn waiting_triggers(cfg: &ManagerConfig) -> Vec<String> {
    let mut waiting_triggers: Vec<String> = cfg
        .registry
        .sites
        .keys()
        .filter_map(|n| {
            let f = TriggerKind::Request.file_name(n);
            crate::fsutil::exists(&cfg.exchange_file(n, &f)).then_some(f)
        })
        .collect();
    waiting_triggers.sort();
    waiting_triggers
}

/// What weakens the separation of the sites, and the acknowledgements refused.
fn warnings(cfg: &ManagerConfig, sites: &[SiteStatus], ack_refused: Vec<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (account, parties) in cfg.registry.shared_accounts() {
        warnings.push(format!(
            "account {account} is shared by {} (allow_shared_account): each can act for the others, and the manager cannot tell who wrote a file",
            parties.join(", ")
        ));
    }
    warnings.extend(cfg.registry.group_problems());
    warnings.extend(ack_refused);
    for (node, files) in crate::rejected::old_layout_sites(cfg) {
        warnings.push(crate::rejected::old_layout_warning(&node, files));
    }
    for s in sites {
        if NodeName::new(&s.name).is_ok_and(|n| cfg.registry.get(&n).is_none()) {
            warnings.push(format!(
                "site {} is subscribed but not registered ([sites.{}] account = ...): its requests are refused and it is not cut",
                s.name, s.name
            ));
        }
    }
    warnings
}

/// The highest counter among the archives and batches of a site's directory.
fn newest_archive(dir: &Path) -> Option<u64> {
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            match classify(name.to_str()?) {
                Ok(Entry::Archive(a)) => Some(a.counter.0),
                Ok(Entry::Batch(b)) => Some(b.to.0),
                _ => None,
            }
        })
        .max()
}

fn print_text(r: &Report) {
    println!("cluster {}", r.cluster);
    for w in &r.warnings {
        println!("WARNING: {w}");
    }
    println!("sites: {}", r.sites.len());
    for s in &r.sites {
        let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        println!(
            "  {:<20} tables {:>4}  sequences {:>4}  since {:>10}  newest archive {:>10}  cut up to {:>10}  applied {:>10}",
            s.name,
            s.table_count,
            opt(s.sequence_count.map(|n| n as u64)),
            opt(s.since),
            opt(s.newest_archive),
            opt(s.cut_counter),
            opt(s.acknowledged)
        );
        if let Some(e) = &s.error {
            println!("    error: {e}");
        }
        if let Some(w) = &s.warning {
            println!("    warning: {w}");
        }
    }
    println!("requests in progress: {}", r.requests.len());
    for q in &r.requests {
        let mut line = format!("  {:<20} {}", q.node, q.state);
        if let Some(n) = q.new_site {
            line.push_str(if n { "  new site" } else { "  existing site" });
        }
        if let Some(c) = q.counter {
            line.push_str(&format!("  snapshot counter {c}"));
        }
        if let Some(t) = q.accepted_at {
            line.push_str(&format!("  accepted at {t} (unix)"));
        }
        println!("{line}");
        if let Some(reason) = &q.reason {
            println!("    reason: {reason}");
        }
        if let Some(e) = &q.error {
            println!("    error: {e}");
        }
    }
    if !r.waiting_triggers.is_empty() {
        println!(
            "request files not taken yet: {}",
            r.waiting_triggers.join(", ")
        );
    }
}
