/*!
`slony-manager import-legacy`: takes over a provider the original tools ran
(`subscription_manager`, `sql_gen`, `parse_slon_logs.pl`, `manage_logs.pl`), so that
`run` continues each site's stream exactly where the original parser left it.

The two layouts, side by side:

| original (`repserver.cfg`) | the manager |
| --- | --- |
| `subscribers_dir/<node>/`: the site's archives | `site_log_dir/<node>/` (the same directory) |
| `tables_dir/<node>.lst` and `parser_config` | `subscribers_dir/<node>/tables` (the state dir) |
| the site's newest archive | `subscribers_dir/<node>/cut_counter` |
| `triggerdir`, shared by every site | `trigger_dir/<node>/`, one per site |
| `SLAVEHOST`, `SLAVEPORT`, `SLAVEDBNAME`, `REPUSER` | `[database]` |
| `kPSLlogsSourceDir` | `archive_dir` |
| `CLUSTERNAME` | `cluster` |

The flow: [`legacy`] reads the files (everything in them is input to check, never a
path or SQL as it stands), [`survey`] lists the sites' directories, [`gather`] asks
the provider's catalog which tables are in the cluster's sets and decides each site's
sequence list with [`crate::sqlgen::site_sequences`] (the rule of a subscription),
[`plan`] decides the inconsistencies and prints the plan, and [`output`] writes the
state and the configuration, once every inconsistency is acknowledged.
*/

pub mod legacy;
pub mod output;
pub mod plan;
pub mod survey;

use crate::registry::Account;
use anyhow::Context;
use legacy::{LegacyConfig, ParserLine};
use plan::{AccountFacts, Facts, SiteFacts};
use slony_shared::config::{ConfigError, DatabaseConfig, RawDatabase};
use slony_shared::ident::NodeName;
use std::path::PathBuf;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// `repserver.cfg`.
    pub legacy_config: PathBuf,
    /// The manager's state directory to fill (its `subscribers_dir`).
    pub state_dir: PathBuf,
    /// The configuration to write.
    pub write_config: PathBuf,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// `NODE=USER` pairs.
    pub accounts: Vec<String>,
    /// The ids of the inconsistencies the operator accepts.
    pub acknowledged: Vec<String>,
    /// The environment variable holding the provider database's password.
    pub password_env: Option<String>,
}

/// Runs the command: prints the plan, and unless it is a dry run, writes.
///
/// # Returns
///
/// The exit code: 0 when the plan was printed (dry run) or the import written.
///
/// # Errors
///
/// Input refused (a [`ConfigError`]: a line of the old files that is not what the original
/// tools wrote), the provider unreachable, an inconsistency not acknowledged, or an I/O
/// error. Nothing is written in any of these cases.
pub fn run(opts: &Options) -> anyhow::Result<u8> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let facts = runtime.block_on(gather(opts))?;
    let issues = plan::issues(&facts);
    print!("{}", plan::render(&facts, &issues));
    let config = output::render_config(&facts, plan::shared_account(&facts))?;
    if opts.dry_run {
        if let Err(e) = output::check_targets(&facts, &config) {
            println!("\nThe import would be refused: {e:#}");
        }
        println!("\nDry run: nothing was written.");
        return Ok(0);
    }
    output::check_targets(&facts, &config)?;
    plan::check_acknowledged(&issues, &opts.acknowledged).map_err(anyhow::Error::msg)?;
    output::write(&facts, &config)?;
    println!(
        "\nImported {} site(s) into {}; configuration written to {}.\n\
         Keep the original tools stopped (the cron lines of parse_slon_logs.pl, manage_logs.pl\n\
         and subscription_manager), then:\n  \
         slony-manager check --config {}\n  slony-manager run --config {}",
        facts.sites.len(),
        facts.state_dir.display(),
        facts.write_config.display(),
        facts.write_config.display(),
        facts.write_config.display()
    );
    Ok(0)
}

/// `NODE=USER` pairs, each node a site of `sites`.
fn accounts(pairs: &[String], sites: &[ParserLine]) -> anyhow::Result<Vec<(NodeName, String)>> {
    let mut out: Vec<(NodeName, String)> = Vec::new();
    for pair in pairs {
        let (node, user) = pair
            .split_once('=')
            .with_context(|| format!("--account {pair:?}: write NODE=USER"))?;
        let node = NodeName::new(node).with_context(|| format!("--account {pair:?}"))?;
        if user.is_empty() {
            anyhow::bail!("--account {pair:?}: the account name is empty");
        }
        if !sites.iter().any(|l| l.node == node && !l.new) {
            anyhow::bail!("--account {pair:?}: {node} is not a site of the parser configuration");
        }
        if out.iter().any(|(n, _)| *n == node) {
            anyhow::bail!("--account names {node} twice");
        }
        out.push((node, user.to_string()));
    }
    Ok(out)
}

/// Reads the old files, lists the sites' directories and asks the provider.
async fn gather(opts: &Options) -> anyhow::Result<Facts> {
    let legacy = LegacyConfig::read(&opts.legacy_config)?;
    let text =
        std::fs::read_to_string(&legacy.parser_config).map_err(|source| ConfigError::Read {
            path: legacy.parser_config.clone(),
            source,
        })?;
    let lines = legacy::parse_parser_config(
        &legacy.parser_config,
        &text,
        &legacy.subscribers_dir,
        &legacy.tables_dir,
    )?;
    let given = accounts(&opts.accounts, &lines)?;
    let state_dir = std::path::absolute(&opts.state_dir)
        .with_context(|| format!("resolving {}", opts.state_dir.display()))?;
    let write_config = std::path::absolute(&opts.write_config)
        .with_context(|| format!("resolving {}", opts.write_config.display()))?;

    let mut sites = Vec::new();
    let mut new_only = Vec::new();
    for line in lines.iter().filter(|l| !l.new) {
        let tables = legacy::read_lst(&line.lst)?;
        let archives = if crate::fsutil::exists(&line.site_dir) {
            Some(survey::archives(&line.site_dir)?)
        } else {
            None
        };
        let mut change =
            survey::change_in_progress(&line.node, &legacy.subscribers_dir, &legacy.tables_dir);
        if let Some(l) = lines.iter().find(|l| l.new && l.node == line.node) {
            change.push(format!(
                "{} line {}",
                legacy.parser_config.display(),
                l.line
            ));
        }
        let (name, given) = match given.iter().find(|(n, _)| *n == line.node) {
            Some((_, user)) => (user.clone(), true),
            None => (line.node.to_string(), false),
        };
        let uid = Account::by_name(&name).map(|a| a.uid);
        sites.push(SiteFacts {
            node: line.node.clone(),
            line: line.line,
            lst: line.lst.clone(),
            tables,
            not_in_set: Vec::new(),
            sequences: Vec::new(),
            notes: Vec::new(),
            archives,
            change,
            account: AccountFacts { name, given, uid },
        });
    }
    for l in lines.iter().filter(|l| l.new) {
        if !sites.iter().any(|s| s.node == l.node) {
            new_only.push(l.node.clone());
        }
    }
    let password_env = opts.password_env.clone();
    ask_provider(&legacy, password_env.clone(), &mut sites).await?;
    Ok(Facts {
        leftovers: survey::trigger_leftovers(&legacy.trigger_dir)?,
        slon: survey::slon_dir(&legacy.archive_dir)?,
        legacy,
        state_dir,
        write_config,
        password_env,
        sites,
        new_only,
        own_uid: crate::fsutil::own_uid(),
    })
}

/// For each site: the tables of its list that are in no set, and its sequence list, read
/// in one read-only snapshot of the provider.
async fn ask_provider(
    legacy: &LegacyConfig,
    password_env: Option<String>,
    sites: &mut [SiteFacts],
) -> anyhow::Result<()> {
    let raw = RawDatabase {
        host: Some(legacy.host.clone()),
        port: Some(legacy.port),
        user: Some(legacy.user.clone()),
        dbname: Some(legacy.dbname.clone()),
        password_env,
        ..RawDatabase::default()
    };
    let database = DatabaseConfig::from_raw(&legacy.path, raw, "provider")?;
    let client = crate::sqlgen::connect_to(&database).await?;
    client
        .batch_execute("SELECT pg_catalog.set_config('search_path', '', false)")
        .await
        .map_err(slony_shared::pg::doing("setting the search_path"))?;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(slony_shared::pg::doing("starting a read-only snapshot"))?;
    let result = async {
        for s in sites.iter_mut() {
            for t in &s.tables {
                if !crate::sqlgen::is_in_a_slony_set(&legacy.cluster, &client, t).await? {
                    s.not_in_set.push(t.clone());
                }
            }
            let (sequences, notes) =
                crate::sqlgen::site_sequences(&legacy.cluster, &client, &s.tables).await?;
            s.sequences = sequences;
            s.notes = notes;
        }
        anyhow::Ok(())
    }
    .await;
    // Read only: nothing to keep.
    let _ = client.batch_execute("ROLLBACK").await;
    result
}
