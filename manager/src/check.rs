/*!
`slony-manager check`: is the provider set up to serve its sites? One verdict per check,
as Barman's `barman check` gives them, in text, `--json` or `--nagios` form (the report
and its renderings are [`slony_shared::check`]). Read only: it takes no lock and can run
beside the daemon.

# The checks, in the order printed

| name | passes when |
| --- | --- |
| `config` | the configuration loads (if not, this is the only line) |
| `provider database` | the provider database answers within `database.connect_timeout_secs`, and holds the Slony catalog `"_<cluster>"` of a log-shipping node (`sl_archive_counter`, as the SQL generation reads it) |
| `archive_dir` | slon is writing: the newest archive (highest counter) was modified at most `--max-archive-age-secs` ago (default 900: slon writes an archive every SYNC, at least every `sync_interval_timeout`, 10 s by default, so 15 minutes without one means slon is stopped or stuck); passes as "not configured" without `archive_dir` |
| `trigger directory` | no one but the manager and root may change `trigger_dir` or a directory above it, and every registered site's exchange directory is the manager's, in the site's group, mode 3770 ([TRUST.md](../../TRUST.md)) |
| `registry` | every site's group admits only the site and the manager, and every subscribed site is registered |
| `site <node> directory` | for each registered site that is subscribed: `<site_log_dir>/<node>/` exists, is the manager's, in the site's group, mode 2750, writable by the manager, with at least 1 GiB and 5 % of its file system free |
| `site <node> lag` | for each subscribed site: its acknowledgement (`applied_counter`) is readable and at most `--max-lag-archives` (default 1000) behind the last archive cut for it. A subscribed site that never acknowledged fails: it has not pulled since it subscribed, or runs with `pull.acknowledge = false` (and housekeeping then keeps its archives) |

Each check is bounded in time, and one failing never stops the others.

# Exit codes

0 every check passed, 1 some failed, 2 the configuration does not load (the manager's
codes). With `--nagios`, Nagios's: 0 OK, 2 CRITICAL.
*/

use crate::config::ManagerConfig;
use crate::exchange::{self, ARCHIVE_MODE, EXCHANGE_MODE};
use crate::registry::SiteAccount;
use slony_shared::check::{self as report, Check, Format, Report};
use slony_shared::ident::NodeName;
use slony_shared::time::human_duration;
use std::time::{Duration, SystemTime};

/// The program name of the report.
const PROGRAM: &str = "slony-manager";

/// What the thresholds are.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How the report is printed.
    pub format: Format,
    /// The newest archive in `archive_dir` may be at most this old.
    pub max_archive_age: Duration,
    /// A site may be at most this many archives behind what was cut for it.
    pub max_lag_archives: u64,
}

/// Runs `check` on the configuration as it loaded (or failed to), prints the report and
/// returns the exit code.
///
/// # Errors
///
/// The async runtime for the database check cannot start.
pub fn run(loaded: anyhow::Result<ManagerConfig>, opts: &Options) -> anyhow::Result<u8> {
    let (report, config_failed) = match loaded {
        Ok(cfg) => (Report::new(PROGRAM, checks(&cfg, opts)?), false),
        Err(e) => (
            Report::new(
                PROGRAM,
                vec![Check::failed(
                    "config",
                    format!("{e:#}"),
                    "fix the file; no other check can run without it",
                )],
            ),
            true,
        ),
    };
    print!("{}", report.render(opts.format));
    Ok(match opts.format {
        Format::Nagios => report.nagios_code(),
        _ if config_failed => 2,
        _ if report.ok => 0,
        _ => 1,
    })
}

/// Every check of a provider whose configuration loaded, in the order printed.
fn checks(cfg: &ManagerConfig, opts: &Options) -> anyhow::Result<Vec<Check>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut out = vec![
        Check::ok("config", cfg.source.display().to_string()),
        runtime.block_on(database_check(cfg)),
        archive_dir_check(cfg, opts.max_archive_age),
        trigger_dir_check(cfg),
        registry_check(cfg),
    ];
    for site in cfg.registry.sites.values() {
        out.extend(site_checks(cfg, site, opts.max_lag_archives));
    }
    Ok(out)
}

/// `provider database`: reachable, and a log-shipping node of the cluster.
async fn database_check(cfg: &ManagerConfig) -> Check {
    const NAME: &str = "provider database";
    let limit = cfg.database.connect_timeout;
    let work = async {
        let client = crate::sqlgen::connect(cfg).await?;
        crate::sqlgen::read_snapshot(cfg, &client).await
    };
    match tokio::time::timeout(limit * 3, work).await {
        Ok(Ok(snapshot)) => Check::ok(
            NAME,
            format!(
                "{}: Slony schema {} present, sl_archive_counter at {}",
                cfg.database.redacted(),
                cfg.cluster.schema(),
                snapshot.counter
            ),
        ),
        Ok(Err(e)) => Check::failed(
            NAME,
            format!("{}: {e:#}", cfg.database.redacted()),
            "check [database]: it must be the Slony node whose slon -a writes archive_dir",
        ),
        Err(_) => Check::failed(
            NAME,
            format!(
                "{}: no answer within {} s",
                cfg.database.redacted(),
                (limit * 3).as_secs()
            ),
            "",
        ),
    }
}

/// `archive_dir`: slon's newest archive is recent.
fn archive_dir_check(cfg: &ManagerConfig, max_age: Duration) -> Check {
    const NAME: &str = "archive_dir";
    let Some(dir) = &cfg.archive_dir else {
        return Check::ok(
            NAME,
            "not configured: the cutter is off, something else fills the site directories",
        );
    };
    let mut warnings = Vec::new();
    let archives = match crate::cutter::list_archives(dir, &mut warnings) {
        Ok(a) => a,
        Err(e) => return Check::failed(NAME, format!("{e:#}"), ""),
    };
    let Some((counter, name)) = archives.iter().next_back() else {
        return Check::failed(
            NAME,
            format!("{} holds no archive", dir.display()),
            "is slon running with -a pointing at archive_dir?",
        );
    };
    let path = dir.join(name.to_string());
    let modified = match std::fs::metadata(&path).and_then(|m| m.modified()) {
        Ok(t) => t,
        Err(e) => return Check::failed(NAME, format!("{}: {e}", path.display()), ""),
    };
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default()
        .as_secs();
    let text = format!(
        "{}: newest archive {counter} was written {} ago",
        dir.display(),
        human_duration(age)
    );
    if age > max_age.as_secs() {
        Check::failed(
            NAME,
            format!(
                "{text}, more than {} (--max-archive-age-secs)",
                human_duration(max_age.as_secs())
            ),
            "is slon running, with -a pointing at archive_dir, and its node's database reachable?",
        )
    } else {
        Check::ok(NAME, text)
    }
}

/// `trigger directory`: only the manager may change it, and each site's exchange
/// directory is as TRUST.md says.
fn trigger_dir_check(cfg: &ManagerConfig) -> Check {
    const NAME: &str = "trigger directory";
    let mut problems = Vec::new();
    if let Err(e) = exchange::check_own_dir("trigger_dir", &cfg.trigger_dir) {
        problems.push(format!("{e:#}"));
    }
    for site in cfg.registry.sites.values() {
        if let Err(e) = exchange::inspect_dir(&cfg.exchange_dir(&site.node), site, EXCHANGE_MODE) {
            problems.push(format!("site {}: {e:#}", site.node));
        }
    }
    if problems.is_empty() {
        let old: Vec<String> = crate::rejected::old_layout_sites(cfg)
            .iter()
            .map(|(node, files)| {
                format!(
                    "; warning: {}",
                    crate::rejected::old_layout_warning(node, *files)
                )
            })
            .collect();
        Check::ok(
            NAME,
            format!(
                "{}: only the manager may change it; the exchange directory of each of {} site(s) is the manager's, in the site's group, mode {EXCHANGE_MODE:o}{}",
                cfg.trigger_dir.display(),
                cfg.registry.sites.len(),
                old.concat()
            ),
        )
    } else {
        Check::failed(
            NAME,
            problems.join("; "),
            "see TRUST.md for the owners and modes; `slony-manager run` makes missing exchange directories and repairs their group and mode at start",
        )
    }
}

/// The sites subscribed on the provider: valid node names with a `<subscribers_dir>/<node>/`.
fn subscribed(cfg: &ManagerConfig) -> anyhow::Result<Vec<NodeName>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&cfg.subscribers_dir)
        .map_err(|e| anyhow::anyhow!("listing {}: {e}", cfg.subscribers_dir.display()))?;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if let Ok(node) = NodeName::new(&name) {
            if entry.path().is_dir() {
                out.push(node);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// `registry`: the sites' accounts and groups keep them apart, and every subscribed site
/// is registered.
fn registry_check(cfg: &ManagerConfig) -> Check {
    const NAME: &str = "registry";
    let mut problems = cfg.registry.group_problems();
    match subscribed(cfg) {
        Ok(nodes) => {
            for n in nodes.iter().filter(|n| cfg.registry.get(n).is_none()) {
                problems.push(format!(
                    "site {n} is subscribed but not registered ([sites.{n}] account = ...): its requests are refused and it is not cut"
                ));
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    if !problems.is_empty() {
        return Check::failed(
            NAME,
            problems.join("; "),
            "see TRUST.md: each site an account and a group of its own, the manager in every site's group",
        );
    }
    let shared: Vec<String> = cfg
        .registry
        .shared_accounts()
        .into_iter()
        .map(|(account, parties)| format!("{account} by {}", parties.join(", ")))
        .collect();
    let mut text = format!("{} site(s) registered", cfg.registry.sites.len());
    if !shared.is_empty() {
        text.push_str(&format!(
            "; accounts shared (allow_shared_account): {}",
            shared.join("; ")
        ));
    }
    Check::ok(NAME, text)
}

/// `site <node> directory` and `site <node> lag`.
fn site_checks(cfg: &ManagerConfig, site: &SiteAccount, max_lag: u64) -> Vec<Check> {
    let node = &site.node;
    let dir_name = format!("site {node} directory");
    let lag_name = format!("site {node} lag");
    if !crate::fsutil::exists(&cfg.site_dir(node)) {
        return vec![
            Check::ok(&dir_name, "not subscribed yet"),
            Check::ok(&lag_name, "not subscribed yet"),
        ];
    }
    vec![
        site_dir_check(cfg, site, &dir_name),
        site_lag_check(cfg, site, &lag_name, max_lag),
    ]
}

/// `site <node> directory`: the site's archive directory, ready for the cutter.
fn site_dir_check(cfg: &ManagerConfig, site: &SiteAccount, name: &str) -> Check {
    let dir = cfg.site_log_dir(&site.node);
    let hint = "the cutter makes it for a subscribed site, and `slony-manager run` repairs its group and mode at start";
    if let Err(e) = exchange::inspect_dir(&dir, site, ARCHIVE_MODE) {
        return Check::failed(name, format!("{e:#}"), hint);
    }
    if let Err(e) = report::writable_dir(&dir) {
        return Check::failed(
            name,
            format!("{} is not writable by the manager: {e}", dir.display()),
            hint,
        );
    }
    match report::space(&dir) {
        Ok(s) => match s.problem() {
            None => Check::ok(
                name,
                format!("{}: writable, {}", dir.display(), s.describe()),
            ),
            Some(p) => Check::failed(
                name,
                format!("{}: {p}", dir.display()),
                format!(
                    "the manager needs at least {} MB and {} % of the file system free",
                    report::MIN_FREE_BYTES >> 20,
                    report::MIN_FREE_PERCENT
                ),
            ),
        },
        Err(e) => Check::failed(
            name,
            format!("{}: cannot read its free space: {e}", dir.display()),
            "",
        ),
    }
}

/// `site <node> lag`: the site's acknowledgement against what was cut for it.
fn site_lag_check(cfg: &ManagerConfig, site: &SiteAccount, name: &str, max_lag: u64) -> Check {
    let node = &site.node;
    let cut = match crate::cutter::read_cut_counter(&cfg.site_dir(node)) {
        Ok(Some(c)) => c,
        Ok(None) => return Check::ok(name, "nothing cut for the site yet"),
        Err(e) => return Check::failed(name, format!("{e:#}"), ""),
    };
    let ack = match crate::housekeeping::read_ack(cfg, node) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Check::failed(
                name,
                format!(
                    "no acknowledgement in {} (cut up to {cut})",
                    cfg.exchange_file(node, slony_shared::ack::ACK_FILE).display()
                ),
                "the site has not pulled since it subscribed, runs with pull.acknowledge = false or without remote.trigger_dir, or still runs the original get_slony_logs.pl (which never acknowledges); housekeeping keeps its archives until it acknowledges",
            )
        }
        Err(why) => return Check::failed(name, why, ""),
    };
    let behind = cut.0.saturating_sub(ack.0);
    let text = format!("{behind} archives behind (acknowledged {ack} of {cut})");
    if behind > max_lag {
        Check::failed(
            name,
            format!("{text}, more than {max_lag} (--max-lag-archives)"),
            "is the site's pull running? `slony-receiver status` on the site says why it is behind",
        )
    } else {
        Check::ok(name, text)
    }
}
