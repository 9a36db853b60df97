//! `subscribe-series`: create or change this site's subscription with the provider.
//!
//! The subscriber's half of the protocol in `slony_shared::trigger`:
//!
//! 1. validate the list, pause pull (die file), upload `<node>.subscribe_series.tgr`;
//! 2. wait (bounded) for `<node>.subscribe_series.sqldone`;
//! 3. download `<node>.sql.gz` and apply it in one transaction;
//! 4. upload `<node>.subscribe_series.sqlapplied` with the result;
//! 5. wait for `<node>.subscribe_series.done`, remove the die file (the manager's files
//!    are the manager's to remove).
//!
//! The files live in the site's exchange directory on the provider,
//! `<trigger_dir>/<node>/`. Each request carries a fresh nonce, and an answer is taken
//! only if it is the manager's answer to this very request (see [`answer`]).
//!
//! Progress is kept in `<site_dir>/subscribe_state.json`, so the command can be run again
//! after any interruption: it resumes where it stopped (an interrupted apply was rolled
//! back by PostgreSQL and is simply applied again). While a request is pending, pull stays
//! paused and every exit says so; `--abort` cancels the request and lifts the pause.

pub mod answer;
pub mod bootstrap;

use crate::config::ReceiverConfig;
use crate::exit;
use crate::provider::Provider;
use answer::{Verifier, Waited};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use slony_shared::trigger::{self, Bound, Nonce, Outcome, Request, SqlDone, TriggerKind};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// The subscribe list, for a new request.
    pub list: Option<PathBuf>,
    /// How many times to look for each answer.
    pub attempts: u32,
    /// Time between looks.
    pub interval: Duration,
    /// Passed through to the provider (original tools' archive flag).
    pub archive: u8,
    /// Passed through (original tools' retention days).
    pub retention: u32,
    /// Passed through (original tools' tape group).
    pub tapegroup: u32,
    /// Cancel the pending request instead.
    pub abort: bool,
}

/// The flags of `subscribe-series` that override the configuration's `[subscribe]`
/// section, each only when given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--attempts`.
    pub attempts: Option<u32>,
    /// `--interval-secs`.
    pub interval_secs: Option<u64>,
    /// `--archive`.
    pub archive: Option<u8>,
    /// `--retention`.
    pub retention: Option<u32>,
    /// `--tapegroup`.
    pub tapegroup: Option<u32>,
}

impl Options {
    /// The options of one run: `[subscribe]` of the configuration, overridden by the
    /// flags given.
    pub fn new(
        defaults: &crate::config::SubscribeConfig,
        flags: Overrides,
        list: Option<PathBuf>,
        abort: bool,
    ) -> Options {
        Options {
            list,
            attempts: flags.attempts.unwrap_or(defaults.attempts),
            interval: flags
                .interval_secs
                .map_or(defaults.interval, Duration::from_secs),
            archive: flags.archive.unwrap_or(defaults.archive),
            retention: flags.retention.unwrap_or(defaults.retention),
            tapegroup: flags.tapegroup.unwrap_or(defaults.tapegroup),
            abort,
        }
    }
}

/// Where a request stands, on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "step", rename_all = "snake_case")]
enum Step {
    /// The request is uploaded; waiting for the SQL.
    Requested,
    /// The SQL was applied (or failed); the result is uploaded; waiting for `.done`.
    Reported {
        /// Whether the SQL applied.
        success: bool,
        /// Why not.
        reason: Option<String>,
    },
}

/// The request in progress, persisted after each step.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    /// The uploaded request file, as sent.
    request: String,
    /// Whether this command created the die file (and so must remove it).
    paused_by_us: bool,
    /// The uid the provider gave the uploaded request: this site's own account there.
    #[serde(default)]
    own_uid: Option<u32>,
    /// The step reached.
    #[serde(flatten)]
    step: Step,
}

fn state_path(cfg: &ReceiverConfig) -> PathBuf {
    cfg.site_dir().join("subscribe_state.json")
}

fn load_state(path: &Path) -> anyhow::Result<Option<State>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
            format!("{} is damaged; remove it to start over (and check the provider's trigger directory)", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_state(path: &Path, state: Option<&State>) -> anyhow::Result<()> {
    match state {
        None => match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        },
        Some(s) => {
            let tmp = path.with_extension("json.tmp");
            slony_shared::private::write(&tmp, &serde_json::to_vec_pretty(s)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
        }
    }
}

/// The paths of this site's protocol files on the provider.
struct Paths {
    exchange: String,
    request: String,
    sqldone: String,
    sql: String,
    sqlapplied: String,
    done: String,
}

impl Paths {
    fn new(cfg: &ReceiverConfig) -> Paths {
        let dir = cfg.remote_exchange_dir().unwrap_or_default();
        let f = |kind: TriggerKind| format!("{dir}/{}", kind.file_name(&cfg.node));
        Paths {
            exchange: dir.clone(),
            request: f(TriggerKind::Request),
            sqldone: f(TriggerKind::SqlDone),
            sql: format!("{dir}/{}", trigger::sql_file_name(&cfg.node)),
            sqlapplied: f(TriggerKind::SqlApplied),
            done: f(TriggerKind::Done),
        }
    }
}

/// Runs the protocol for a validated list (`series`, or `None` to resume or abort the
/// request in progress), with the run lock held; returns the exit code.
pub async fn run(
    cfg: &ReceiverConfig,
    opts: &Options,
    series: Option<Vec<trigger::Series>>,
) -> anyhow::Result<u8> {
    crate::local::prepare_dirs(cfg)?;
    let state_file = state_path(cfg);
    let paths = Paths::new(cfg);
    let remote = Provider::connect(&cfg.remote).await?;
    let state = load_state(&state_file)?;
    if opts.abort {
        return abort(cfg, &remote, &paths, state.as_ref(), &state_file).await;
    }
    let mut state = match state {
        Some(s) => {
            if opts.list.is_some() {
                let first = s.request.lines().next().unwrap_or("");
                eprintln!("slony-receiver: a subscription request is already in progress ({first}, step {:?}); finishing it first. Run again afterwards for the new list, or use --abort to cancel it.", s.step);
            }
            tracing::info!(step = ?s.step, "resuming the subscription request in progress");
            s
        }
        None => start_request(cfg, &remote, &paths, opts, series, &state_file).await?,
    };
    let binding = trigger::request_binding(state.request.as_bytes()).with_context(|| {
        format!(
            "the request in progress ({}) names no nonce: it was sent by an older slony-receiver. Run with --abort, then send it again",
            state_file.display()
        )
    })?;
    let run = Run {
        cfg,
        opts,
        remote: &remote,
        paths: &paths,
        state_file: &state_file,
        binding: &binding,
    };
    let verifier = run.resume(&mut state).await?;
    if state.step == Step::Requested {
        if let Some(code) = run.answer(&mut state, &verifier).await? {
            return Ok(code);
        }
    }
    run.conclude(&state, &verifier).await
}

/// One request in progress, and everything its steps share.
struct Run<'a> {
    cfg: &'a ReceiverConfig,
    opts: &'a Options,
    remote: &'a Provider,
    paths: &'a Paths,
    state_file: &'a Path,
    binding: &'a trigger::Binding,
}

impl Run<'_> {
    /// Makes sure the request reached the provider, learns who the manager is, and
    /// catches up with what a killed run did after its last saved step.
    async fn resume(&self, state: &mut State) -> anyhow::Result<Verifier> {
        // A request whose upload completed (its owner is known) is never sent again: the
        // manager may have taken and ended it already.
        if state.step == Step::Requested && state.own_uid.is_none() {
            resend_if_lost(
                self.remote,
                self.paths,
                state,
                self.state_file,
                self.binding,
            )
            .await?;
        }
        let verifier = Verifier::new(
            self.remote,
            &self.cfg.remote.trigger_dir,
            &self.paths.exchange,
            state.own_uid,
            self.cfg.remote.allow_shared_account,
            self.binding.clone(),
        )
        .await?;
        // A run killed after applying or reporting left the request further on than its
        // state file says: the replica's record and this site's own report tell.
        if state.step == Step::Requested {
            if let Some(step) =
                already_reported(self.cfg, self.remote, self.paths, self.binding).await?
            {
                tracing::info!(
                    ?step,
                    "the request was already applied or reported before this run"
                );
                state.step = step;
                save_state(self.state_file, Some(state))?;
            }
        }
        Ok(verifier)
    }

    /// Waits for the manager's SQL, applies it and reports; `Some(code)` when the run
    /// ends here (the manager refused the request, or no answer came in time).
    async fn answer(&self, state: &mut State, verifier: &Verifier) -> anyhow::Result<Option<u8>> {
        let paths = self.paths;
        let answer = answer::wait_for_first(
            self.remote,
            &paths.sqldone,
            &paths.done,
            self.opts,
            verifier,
        )
        .await?;
        match answer {
            Waited::Got(answer::First::Done(done)) => {
                // The manager ended it on a report this site sent but had not recorded.
                state.step = Step::Reported {
                    success: done.success,
                    reason: done.reason.clone(),
                };
                save_state(self.state_file, Some(state))?;
                Ok(None)
            }
            Waited::TimedOut(refused) => Ok(Some(timed_out(
                self.cfg,
                self.opts,
                "the manager's SQL (.sqldone)",
                &refused,
            ))),
            Waited::Got(answer::First::SqlDone(SqlDone::Failed { reason })) => {
                // The manager's files are its own to remove (the directory is sticky); it
                // does so when the next request arrives.
                finish(self.cfg, state, self.state_file)?;
                eprintln!("slony-receiver: the manager refused the subscription request: {reason}");
                tracing::error!(%reason, "subscription refused by the manager; nothing changed");
                Ok(Some(exit::APPLY))
            }
            Waited::Got(answer::First::SqlDone(SqlDone::Ready {
                new_site,
                counter,
                sql,
                notes,
            })) => {
                for n in &notes {
                    eprintln!("note from the manager: {n}");
                }
                let outcome = self
                    .download_and_apply(state, verifier, new_site, counter, &sql)
                    .await;
                crash_point("after-commit");
                let (success, reason) = match &outcome {
                    Ok(()) => (true, None),
                    Err(e) => (false, Some(format!("{e:#}"))),
                };
                let result = Outcome {
                    success,
                    reason: reason.clone(),
                };
                self.remote
                    .upload(
                        &paths.sqlapplied,
                        result.render(Some(self.binding)).into_bytes(),
                    )
                    .await?;
                crash_point("after-report");
                state.step = Step::Reported { success, reason };
                save_state(self.state_file, Some(state))?;
                Ok(None)
            }
        }
    }

    /// Downloads the manager's SQL, checks it is the one `.sqldone` describes, and
    /// applies it.
    async fn download_and_apply(
        &self,
        state: &State,
        verifier: &Verifier,
        new_site: bool,
        counter: slony_shared::counter::Counter,
        sql: &trigger::Digest,
    ) -> anyhow::Result<()> {
        let local = self.cfg.site_dir().join("subscribe.sql.gz");
        let outcome = match answer::download_sql(
            self.remote,
            &self.paths.sql,
            &local,
            verifier,
            sql,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(
                    bytes = sql.size,
                    sha256 = %sql.sha256,
                    new_site,
                    counter = counter.0,
                    "applying the subscription SQL"
                );
                let subscribed: Vec<slony_shared::ident::QualifiedTable> =
                    Request::parse(state.request.as_bytes(), &self.cfg.node)
                        .map(|r| {
                            r.series
                                .into_iter()
                                .filter(|s| s.action == trigger::Action::Subscribe)
                                .map(|s| s.table)
                                .collect()
                        })
                        .unwrap_or_default();
                apply_sql(
                    self.cfg,
                    &local,
                    new_site,
                    counter,
                    &self.binding.nonce,
                    &subscribed,
                )
                .await
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "ALERT: the SQL file is not the one the manager published");
                Err(e)
            }
        };
        let _ = std::fs::remove_file(&local);
        outcome
    }

    /// Waits for the manager's `.done`, lifts the pause and says how the change ended.
    async fn conclude(&self, state: &State, verifier: &Verifier) -> anyhow::Result<u8> {
        let cfg = self.cfg;
        let Step::Reported { success, reason } = state.step.clone() else {
            bail!("internal: unexpected subscription step {:?}", state.step);
        };
        let done = match answer::wait_for(
            self.remote,
            &self.paths.done,
            self.opts,
            "the manager to finish",
            verifier,
            Outcome::parse,
        )
        .await?
        {
            Waited::Got(done) => done,
            Waited::TimedOut(refused) => {
                return Ok(timed_out(
                    cfg,
                    self.opts,
                    "the manager's completion (.done)",
                    &refused,
                ))
            }
        };
        if !(success && done.success) {
            finish(cfg, state, self.state_file)?;
            let why = reason
                .or(done.reason)
                .unwrap_or_else(|| "no reason given".into());
            eprintln!("slony-receiver: the subscription change failed and was rolled back on both sides: {why}");
            return Ok(exit::APPLY);
        }
        // Before the pause is lifted: archives fetched ahead before the change were cut
        // with the previous list; they are fetched again, cut with the new one. A run
        // killed here does it again (the state is still there).
        let client = crate::replica::connect(cfg).await?;
        let position = crate::replica::read_position(&client, &cfg.cluster).await?;
        discard_fetched_ahead(cfg, position.counter);
        let _ = crate::local::write_counter_file(&cfg.counter_file(), position.counter);
        finish(cfg, state, self.state_file)?;
        match crate::guard::protect(cfg).await {
            Ok(g) => tracing::info!(tables = g.guarded.len(), newly = g.changed.len(), "replica guard on: replicated tables refuse local writes"),
            Err(e) => eprintln!("warning: the replicated tables are NOT guarded against local writes ({e:#}); run `slony-receiver guard on`"),
        }
        println!(
            "subscription updated; the replica is at archive {} and pull resumes from there",
            position.counter
        );
        Ok(exit::OK)
    }
}

/// Removes the archives waiting in `incoming/` beyond `counter`.
fn discard_fetched_ahead(cfg: &ReceiverConfig, counter: slony_shared::counter::Counter) {
    let dir = cfg.incoming_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Ok(slony_shared::archive::name::Entry::Archive(a)) =
            slony_shared::archive::name::classify(&name.to_string_lossy())
        {
            if a.counter > counter {
                if let Err(e) = std::fs::remove_file(entry.path()) {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an archive fetched before the subscription change");
                }
            }
        }
    }
}

/// The content of the protocol file at `path` if it is there, reads, and names exactly
/// `binding` (whoever wrote it: the callers only ask whether this request got that far).
///
/// # Errors
///
/// An SSH error other than a file that is missing or may not be read.
async fn bound_to<T>(
    remote: &Provider,
    path: &str,
    binding: &trigger::Binding,
    parse: impl Fn(&[u8]) -> Result<Bound<T>, trigger::TriggerError>,
) -> anyhow::Result<Option<T>> {
    let read = remote
        .read_small_owned(path, trigger::MAX_TRIGGER_SIZE as u64)
        .await;
    let bytes = match read {
        Ok(Some((bytes, _))) => bytes,
        Ok(None) | Err(crate::provider::RemoteError::Refused { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(parse(&bytes)
        .ok()
        .filter(|b| b.binding.as_ref() == Some(binding))
        .map(|b| b.body))
}

/// After a crash: this site's own report of the request, if still on the provider, or the
/// replica's record that its SQL was applied (then reported now). `None`: neither.
async fn already_reported(
    cfg: &ReceiverConfig,
    remote: &Provider,
    paths: &Paths,
    binding: &trigger::Binding,
) -> anyhow::Result<Option<Step>> {
    if let Some(body) = bound_to(remote, &paths.sqlapplied, binding, Outcome::parse).await? {
        return Ok(Some(Step::Reported {
            success: body.success,
            reason: body.reason,
        }));
    }
    let client = crate::replica::connect(cfg).await?;
    if crate::replica::was_applied(&client, &cfg.cluster, &binding.nonce)
        .await
        .context("reading the replica's record of applied subscription changes")?
    {
        let result = Outcome {
            success: true,
            reason: None,
        };
        remote
            .upload(&paths.sqlapplied, result.render(Some(binding)).into_bytes())
            .await?;
        return Ok(Some(Step::Reported {
            success: true,
            reason: None,
        }));
    }
    Ok(None)
}

/// After a run killed before its request reached the provider: sends it again, unless the
/// provider already holds it or answered it (its `.tgr`, or a `.sqldone` or `.done` bound
/// to it). The same request, the same nonce: the manager takes it once.
async fn resend_if_lost(
    remote: &Provider,
    paths: &Paths,
    state: &mut State,
    state_file: &Path,
    binding: &trigger::Binding,
) -> anyhow::Result<()> {
    let there = remote.size_of(&paths.request).await?.is_some()
        || bound_to(remote, &paths.sqldone, binding, SqlDone::parse)
            .await?
            .is_some()
        || bound_to(remote, &paths.done, binding, Outcome::parse)
            .await?
            .is_some();
    if !there {
        tracing::info!(
            "the request never reached the provider (a run was killed); sending it again"
        );
        state.own_uid = Some(
            remote
                .upload(&paths.request, state.request.clone().into_bytes())
                .await?
                .uid,
        );
        save_state(state_file, Some(state))?;
    }
    Ok(())
}

/// The test hook of the crash windows ([`slony_shared::crash`]).
fn crash_point(point: &str) {
    slony_shared::crash::point("SLONY_RECEIVER_CRASH_AT", point);
}

/// Validates the list, pauses pull and uploads the request.
async fn start_request(
    cfg: &ReceiverConfig,
    remote: &Provider,
    paths: &Paths,
    opts: &Options,
    series: Option<Vec<trigger::Series>>,
    state_file: &Path,
) -> anyhow::Result<State> {
    let Some(series) = series else {
        bail!("give --list FILE (schema.table subscribe|unsubscribe per line), or --abort");
    };
    // Check the database now: better to fail before pausing anything.
    crate::privilege::check_applier(&crate::replica::connect(cfg).await?).await?;
    let request = Request {
        node: cfg.node.clone(),
        nonce: Nonce::random().context("drawing the request's nonce")?,
        archive: opts.archive,
        retention: opts.retention,
        tapegroup: opts.tapegroup,
        series,
    };
    let die = cfg.die_file();
    let paused_by_us = !die.exists();
    let mut state = State {
        request: request.render(),
        paused_by_us,
        own_uid: None,
        step: Step::Requested,
    };
    // The state is saved before anything else: a run killed at any later point leaves a
    // request its rerun knows (its nonce, and whose pause file it is).
    save_state(state_file, Some(&state))?;
    if paused_by_us {
        std::fs::write(&die, "paused by slony-receiver subscribe-series\n")
            .with_context(|| format!("creating the pause file {}", die.display()))?;
    }
    crash_point("after-state");
    // Answers left by an earlier request are refused (they name another nonce); the
    // manager removes them when it takes this one.
    let sent = match remote
        .upload(&paths.request, state.request.clone().into_bytes())
        .await
    {
        Ok(owner) => {
            state.own_uid = Some(owner.uid);
            save_state(state_file, Some(&state))
        }
        Err(e) => Err(e.into()),
    };
    if let Err(e) = sent {
        // Nothing was requested: do not leave pull paused.
        finish(cfg, &state, state_file)?;
        return Err(e.context("sending the subscription request"));
    }
    tracing::info!(tables = request.series.len(), trigger = %paths.request, "subscription request sent; pull is paused until it completes");
    Ok(state)
}

/// Applies the SQL and, for a new site, checks the counter it set.
async fn apply_sql(
    cfg: &ReceiverConfig,
    local: &Path,
    new_site: bool,
    counter: slony_shared::counter::Counter,
    nonce: &Nonce,
    subscribed: &[slony_shared::ident::QualifiedTable],
) -> anyhow::Result<()> {
    let client = crate::replica::connect(cfg).await?;
    crate::privilege::check_applier(&client).await?;
    let mut behind = false;
    if !new_site {
        // New tables hold the provider's state at `counter`; a replica already past it has
        // skipped their changes since, for good.
        let position = crate::replica::read_position(&client, &cfg.cluster).await?;
        if position.counter > counter {
            bail!(
                "the provider's snapshot is at archive {counter}, but this replica is already at {}: the new tables would miss the changes in between. Ask the provider why its archive counter is behind",
                position.counter
            );
        }
        behind = position.counter < counter;
        if let Some((t, at)) = crate::replica::pending_drop_of(&client, &cfg.cluster, subscribed)
            .await
            .context("reading the replica's pending drops")?
        {
            bail!(
                "{t} was unsubscribed with allow_drop, and that takes effect at archive {at}: the archives before it still carry its rows, so it cannot be subscribed again yet. Run pull until the replica is past archive {at}, then subscribe again"
            );
        }
    }
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar =
            indicatif::ProgressBar::new(std::fs::metadata(local).map(|m| m.len()).unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "applying subscription SQL [{bar:40}] {bytes}/{total_bytes} (compressed) {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let mut last_log = Instant::now();
    let what = bootstrap::Bootstrap {
        cluster: &cfg.cluster,
        new_site_at: new_site.then_some(counter),
        allow: cfg.sql_allow,
        request: (nonce, counter),
        behind,
    };
    bootstrap::apply(&client, local, &what, |done, total| match &bar {
        Some(bar) => bar.set_position(done),
        None if last_log.elapsed() >= Duration::from_secs(5) => {
            last_log = Instant::now();
            tracing::info!(read = done, total, "applying subscription SQL");
        }
        None => {}
    })
    .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if new_site {
        let position = crate::replica::read_position(&client, &cfg.cluster).await?;
        if position.counter != counter {
            bail!("after the SQL the replica is at counter {}, but the manager's snapshot is at {counter}", position.counter);
        }
    }
    Ok(())
}

/// Reads and validates a subscribe list (ours, or the original tools' as it is): the
/// series, and the notes the operator must read ([`trigger::read_series_list`]).
pub fn read_list(list: &Path) -> anyhow::Result<trigger::SeriesList> {
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("reading subscribe list {}", list.display()))?;
    trigger::read_series_list(&text).with_context(|| format!("subscribe list {}", list.display()))
}

fn timed_out(cfg: &ReceiverConfig, opts: &Options, what: &str, refused: &[String]) -> u8 {
    if !refused.is_empty() {
        eprintln!(
            "slony-receiver: while waiting, {} file(s) were refused as not the manager's answer to this request (see above); nothing of them was applied",
            refused.len()
        );
    }
    let list = opts
        .list
        .as_ref()
        .map_or_else(|| "FILE".to_string(), |l| l.display().to_string());
    eprintln!(
        "slony-receiver: no answer yet: gave up waiting for {what}. The request is still pending on the provider and pull STAYS PAUSED ({}).\n  Run `slony-receiver subscribe-series {} --list {list}` again to keep waiting (the request in progress is finished first; the list is only read for a new one), or `slony-receiver subscribe-series {} --abort` to cancel the request and resume pull.",
        cfg.die_file().display(),
        cfg.config_arg(),
        cfg.config_arg()
    );
    exit::TIMEOUT
}

/// Ends a request locally: lifts the pause (if ours) and forgets the state.
fn finish(cfg: &ReceiverConfig, state: &State, state_file: &Path) -> anyhow::Result<()> {
    if state.paused_by_us {
        let die = cfg.die_file();
        match std::fs::remove_file(&die) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!(
                        "removing the pause file {}: pull stays PAUSED until it is removed",
                        die.display()
                    )
                })
            }
            _ => {}
        }
    } else {
        eprintln!(
            "note: pull was already paused before this request ({}); it stays paused",
            cfg.die_file().display()
        );
    }
    save_state(state_file, None)
}

/// `--abort`: withdraws the request. If the manager already made the SQL, it is told the
/// subscriber did not apply it, so it rolls its side back. A request whose SQL is already
/// committed on the replica is not withdrawn: the manager would roll back what the
/// replica holds.
async fn abort(
    cfg: &ReceiverConfig,
    remote: &Provider,
    paths: &Paths,
    state: Option<&State>,
    state_file: &Path,
) -> anyhow::Result<u8> {
    if let Some(binding) = state
        .filter(|s| s.step == Step::Requested)
        .and_then(|s| trigger::request_binding(s.request.as_bytes()))
    {
        let client = crate::replica::connect(cfg).await?;
        if crate::replica::was_applied(&client, &cfg.cluster, &binding.nonce).await? {
            eprintln!("slony-receiver: the SQL of the request in progress is already applied on the replica (a run was killed after its commit), so it cannot be withdrawn: run `slony-receiver subscribe-series {} --list FILE` again to finish it on both sides", cfg.config_arg());
            return Ok(exit::APPLY);
        }
    }
    let Some(state) = state else {
        println!("no subscription request in progress; nothing to abort");
        return Ok(exit::OK);
    };
    remote.remove(&paths.request).await?;
    let binding = trigger::request_binding(state.request.as_bytes());
    if let (Some(binding), true) = (
        binding,
        remote.size_of(&paths.sqldone).await?.is_some() && state.step == Step::Requested,
    ) {
        let result = Outcome {
            success: false,
            reason: Some("aborted by the subscriber".into()),
        };
        remote
            .upload(
                &paths.sqlapplied,
                result.render(Some(&binding)).into_bytes(),
            )
            .await?;
    }
    finish(cfg, state, state_file)?;
    println!("subscription request aborted; pull is no longer paused by it");
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubscribeConfig;

    #[test]
    fn flags_override_the_configuration_only_when_given() {
        let defaults = SubscribeConfig {
            attempts: 60,
            interval: Duration::from_secs(7),
            archive: 1,
            retention: 30,
            tapegroup: 4,
        };
        let o = Options::new(&defaults, Overrides::default(), None, false);
        assert_eq!(
            (o.attempts, o.interval, o.archive, o.retention, o.tapegroup),
            (60, Duration::from_secs(7), 1, 30, 4)
        );
        let flags = Overrides {
            attempts: Some(3),
            interval_secs: Some(1),
            archive: Some(0),
            retention: None,
            tapegroup: Some(2),
        };
        let o = Options::new(&defaults, flags, Some(PathBuf::from("l")), true);
        assert_eq!(
            (o.attempts, o.interval, o.archive, o.retention, o.tapegroup),
            (3, Duration::from_secs(1), 0, 30, 2)
        );
        assert!(o.abort);
        assert_eq!(o.list, Some(PathBuf::from("l")));
    }
}
