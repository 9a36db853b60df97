/*!
Drives one site's request through its states (see [`super`]): the I/O half of the state
machine.

[`accept`] turns a complete `.tgr` into a persisted `Generating` (or `Rejected`) state;
[`drive`] then performs the current state's step, persists the next state, and repeats
until the request waits for the subscriber or is over. Each step can be repeated after a
crash: it first undoes or skips what an interrupted attempt left behind.

Errors stay with their site: a failure while generating becomes a failed `.sqldone`, and
a failure in a later step (a disk error) is logged and tried again as
[`crate::retry`] says.

The steps' file work runs on the runtime's blocking pool, the generation's database work
on the task, and the SQL file is written by [`crate::sqlgen`]'s writer task.
*/

use crate::config::ManagerConfig;
use crate::context::DaemonContext;
use crate::cutter::CutterHandle;
use crate::exchange;
use crate::fsutil::{self, OtherSide};
use crate::registry::SiteAccount;
use crate::request::{Event, Record, RequestState};
use crate::site;
use crate::sqlgen;
use anyhow::Context;
use slony_shared::counter::Counter;
use slony_shared::ident::NodeName;
use slony_shared::trigger::{
    request_binding, sql_file_name, Binding, Digest, Outcome, Request, SqlDone, TriggerError,
    TriggerKind, MAX_TRIGGER_SIZE,
};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// How a [`drive`] run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The request waits for the subscriber (or for a retry after an error).
    Waiting,
    /// The request is over and its state file removed.
    Closed,
    /// Shutdown was requested between two steps.
    Stopped,
}

/// The paths of one site's protocol files.
struct Files {
    tgr: PathBuf,
    sqldone: PathBuf,
    sqlapplied: PathBuf,
    done: PathBuf,
    sql: PathBuf,
    sql_part: PathBuf,
    state: PathBuf,
    cancel: PathBuf,
}

impl Files {
    fn new(cfg: &ManagerConfig, node: &NodeName) -> Files {
        let f = |name: &str| cfg.exchange_file(node, name);
        let sql = f(&sql_file_name(node));
        let mut part = sql.clone().into_os_string();
        part.push(".part");
        Files {
            tgr: f(&TriggerKind::Request.file_name(node)),
            sqldone: f(&TriggerKind::SqlDone.file_name(node)),
            sqlapplied: f(&TriggerKind::SqlApplied.file_name(node)),
            done: f(&TriggerKind::Done.file_name(node)),
            sql,
            sql_part: PathBuf::from(part),
            state: cfg.state_file(node),
            cancel: cfg.cancel_file(node),
        }
    }
}

/// The registered site `node`; a request state of an unregistered one is an error.
fn site_of<'a>(cfg: &'a ManagerConfig, node: &NodeName) -> anyhow::Result<&'a SiteAccount> {
    cfg.registry.get(node).with_context(|| {
        format!(
            "site {node} is not registered in {} ([sites.{node}] account = ...)",
            cfg.source.display()
        )
    })
}

/// The binding of a recorded request (empty for a request refused unread).
fn binding_of(record: &Record) -> Option<Binding> {
    request_binding(record.request.as_bytes())
}

/// What [`accept`] made of a `.tgr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// No (complete) request file: look again later.
    NotYet,
    /// A request state was written; [`drive`] takes it from here.
    Started,
}

/// Reads `<node>.subscribe_series.tgr` and, if it is complete, records the request:
/// `Generating` for a valid one (after removing stale files of an earlier request),
/// `Rejected` for an invalid one. The caller has checked that no request of this node is
/// in progress.
///
/// # Errors
///
/// The file or the state could not be read or written.
pub fn accept(ctx: &DaemonContext, node: &NodeName) -> anyhow::Result<Accepted> {
    let cfg = &*ctx.cfg;
    let f = Files::new(cfg, node);
    let site = site_of(cfg, node)?;
    let raw;
    let parsed = match exchange::read_from_site(cfg, site, &f.tgr, MAX_TRIGGER_SIZE)? {
        OtherSide::Missing => return Ok(Accepted::NotYet),
        OtherSide::Bytes(bytes) => {
            let r = Request::parse(&bytes, node);
            raw = bytes;
            r
        }
        OtherSide::Refused(why) => {
            // Not the site's own request: it is not answered (the site did not ask), only
            // moved aside and reported.
            refuse(
                ctx,
                node,
                &f.tgr,
                "forged-request",
                "a request that does not come from its site",
                &why,
            )?;
            return Ok(Accepted::NotYet);
        }
    };
    let new_site = !fsutil::exists(&cfg.site_dir(node));
    let record = match parsed {
        Err(TriggerError::Incomplete) => {
            tracing::debug!(%node, "request file not complete yet");
            return Ok(Accepted::NotYet);
        }
        Err(e) => {
            tracing::warn!(%node, error = %e, "refusing an invalid request");
            // The refusal names the request's nonce when it can be read, so the site
            // can tell it is the answer to its own request.
            let binding = request_binding(&raw)
                .filter(|b| &b.node == node)
                .map(|b| format!("node {}\nnonce {}\nEOF\n", b.node, b.nonce))
                .unwrap_or_default();
            Record::start(
                node,
                new_site,
                binding,
                Event::Refused {
                    reason: format!("invalid request: {e}"),
                },
            )?
        }
        Ok(req) => {
            // Answers of an earlier, abandoned request must not be taken for this one's.
            fsutil::remove_site_entry(&f.sqlapplied);
            for stale in [&f.sqldone, &f.done, &f.sql, &f.sql_part, &f.cancel] {
                fsutil::remove_file(stale)?;
            }
            tracing::info!(
                %node,
                new_site,
                series = req.series.len(),
                "accepted a subscription request"
            );
            Record::start(node, new_site, req.render(), Event::Accepted)?
        }
    };
    record.save(&f.state)?;
    Ok(Accepted::Started)
}

/// Performs steps until the request waits or ends. Once `shutdown` is set no new
/// generation starts; a generation already running completes and is announced.
///
/// Every step but the generation's database work is blocking file work (reads, atomic
/// writes with their fsyncs, the promotion under the cutter's lock): it runs on the
/// runtime's blocking pool ([`blocking`]), never on an async worker.
///
/// # Errors
///
/// A step that failed in a way that cannot be answered to the subscriber (a disk error,
/// a damaged state file); the state is unchanged and the step is retried later.
pub async fn drive(
    ctx: &DaemonContext,
    node: &NodeName,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Progress> {
    loop {
        let (c, n) = (ctx.clone(), node.clone());
        let record = match blocking(move || step(&c, &n)).await? {
            Step::Next => continue,
            Step::Waiting => return Ok(Progress::Waiting),
            Step::Closed => return Ok(Progress::Closed),
            Step::Generate(record) => record,
        };
        // Only a generation is long; the other steps are a few file operations, and
        // finishing them (announcing a generated SQL above all) leaves the subscriber
        // nothing to wait for while the manager is down.
        if *shutdown.borrow() {
            return Ok(Progress::Stopped);
        }
        let event = generate(&ctx.cfg, node, &record).await;
        let next = record.apply(event)?;
        let f = Files::new(&ctx.cfg, node);
        if blocking(move || save(&f, next)).await? == Step::Closed {
            return Ok(Progress::Closed);
        }
    }
}

/// Runs blocking file work on the runtime's blocking pool and waits for it.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .context("a request step did not complete")?
}

/// What one blocking [`step`] left for [`drive`].
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The state changed: take the next step.
    Next,
    /// The request waits for the subscriber.
    Waiting,
    /// The request is over and its state file removed.
    Closed,
    /// The request is generating: the async half takes it.
    Generate(Record),
}

/// Performs the step of the recorded state, unless it is the generation, and persists
/// the state it leads to.
fn step(ctx: &DaemonContext, node: &NodeName) -> anyhow::Result<Step> {
    let cfg = &*ctx.cfg;
    let f = Files::new(cfg, node);
    let Some(record) = Record::load(&f.state, node)? else {
        return Ok(Step::Closed);
    };
    let next = match &record.state {
        RequestState::Generating => return Ok(Step::Generate(record)),
        RequestState::Published {
            announced: false, ..
        } => announce(node, &f, &record)?,
        RequestState::Published {
            announced: true, ..
        } => {
            let binding = binding_of(&record);
            match read_applied(ctx, node, &f, binding.as_ref())? {
                None => return Ok(Step::Waiting),
                Some(outcome) => {
                    tracing::info!(
                        %node,
                        success = outcome.success,
                        reason = outcome.reason.as_deref().unwrap_or(""),
                        "the subscriber answered"
                    );
                    record.apply(Event::Applied {
                        success: outcome.success,
                        reason: outcome.reason,
                    })?
                }
            }
        }
        RequestState::Finishing { success, reason } => {
            let binding = binding_of(&record);
            finish(
                cfg,
                &ctx.cutter,
                node,
                &f,
                binding.as_ref(),
                record.new_site,
                *success,
                reason.clone(),
            )?;
            record.apply(Event::Closed)?
        }
        RequestState::Rejected { reason } => reject(cfg, node, &f, &record, reason)?,
    };
    save(&f, next)
}

/// Persists the state a step led to, or removes the state file once the request is over.
fn save(f: &Files, next: Option<Record>) -> anyhow::Result<Step> {
    match next {
        Some(r) => {
            r.save(&f.state)?;
            Ok(Step::Next)
        }
        None => {
            fsutil::remove_file(&f.state)?;
            Ok(Step::Closed)
        }
    }
}

/// The `Published` step before `.sqldone`: answers with the SQL's counter and digest,
/// then removes the `.tgr`.
fn announce(node: &NodeName, f: &Files, record: &Record) -> anyhow::Result<Option<Record>> {
    let RequestState::Published {
        counter,
        notes,
        sha256,
        size,
        ..
    } = &record.state
    else {
        anyhow::bail!("announcing a request that is not published");
    };
    // A request recorded by an older version has no nonce: its answers are unbound, and
    // the subscriber refuses them (it must send the request again).
    let binding = binding_of(record);
    // A `.sqlapplied` already there is left alone: after a crash between writing
    // `.sqldone` and recording it, it may be the site's real answer, and a stale one
    // names another request and is refused.
    let sql = if sha256.is_empty() {
        Digest::of(fsutil::open_own(&f.sql)?)
            .with_context(|| format!("reading back {}", f.sql.display()))?
    } else {
        Digest {
            sha256: sha256.clone(),
            size: *size,
        }
    };
    let done = SqlDone::Ready {
        new_site: record.new_site,
        counter: Counter(*counter),
        sql,
        notes: notes.clone(),
    };
    fsutil::write_atomic(&f.sqldone, done.render(binding.as_ref()).as_bytes())?;
    crash_point("after-sqldone");
    fsutil::remove_file(&f.tgr)?;
    tracing::info!(%node, counter, "SQL published; waiting for the subscriber");
    Ok(record.apply(Event::Announced)?)
}

/// The `Rejected` step: discards what was prepared, answers with a failed `.sqldone`
/// and removes the `.tgr`.
fn reject(
    cfg: &ManagerConfig,
    node: &NodeName,
    f: &Files,
    record: &Record,
    reason: &str,
) -> anyhow::Result<Option<Record>> {
    site::discard(&cfg.new_site_dir(node))?;
    fsutil::remove_file(&f.sql_part)?;
    fsutil::remove_file(&f.sql)?;
    let answer = SqlDone::Failed {
        reason: reason.to_string(),
    };
    let binding = binding_of(record);
    fsutil::write_atomic(&f.sqldone, answer.render(binding.as_ref()).as_bytes())?;
    fsutil::remove_file(&f.tgr)?;
    tracing::warn!(%node, %reason, "request refused");
    Ok(record.apply(Event::Closed)?)
}

/// The `Generating` step: list, snapshot, SQL. Every failure becomes a refusal.
async fn generate(cfg: &Arc<ManagerConfig>, node: &NodeName, record: &Record) -> Event {
    match try_generate(cfg, node, record).await {
        Ok((counter, notes, digest)) => Event::Generated {
            counter: counter.0,
            notes,
            sha256: digest.sha256,
            size: digest.size,
        },
        Err(e) => {
            let part = Files::new(cfg, node).sql_part;
            // The removal goes to the blocking pool too; failing, it is redone by the
            // next attempt, which starts by removing it.
            let _ = blocking(move || fsutil::remove_file(&part)).await;
            Event::Refused {
                reason: format!("{e:#}"),
            }
        }
    }
}

/// Lists, snapshots and writes the SQL: the file work before and after the database's
/// on the blocking pool, the SQL itself through [`sqlgen::generate`]'s writer thread.
async fn try_generate(
    cfg: &Arc<ManagerConfig>,
    node: &NodeName,
    record: &Record,
) -> anyhow::Result<(Counter, Vec<String>, Digest)> {
    let (c, n, r) = (Arc::clone(cfg), node.clone(), record.clone());
    let mut plan = blocking(move || prepare_generation(&c, &n, &r)).await?;
    tracing::info!(
        %node,
        added = plan.added.len(),
        dropped = plan.dropped.len(),
        tables = plan.tables.len(),
        "generating the subscription SQL"
    );
    let started = std::time::Instant::now();
    let f = Files::new(cfg, node);
    let generated = sqlgen::generate(cfg, node, &plan, &f.sql_part).await?;
    let counter = generated.snapshot.counter;
    let (c, n) = (Arc::clone(cfg), node.clone());
    let (extra, digest) = blocking(move || publish_generation(&c, &n, generated)).await?;
    tracing::info!(
        %node,
        counter = counter.0,
        secs = started.elapsed().as_secs_f64(),
        "subscription SQL generated"
    );
    plan.notes.extend(extra);
    Ok((counter, plan.notes, digest))
}

/// Before the snapshot: discards an interrupted attempt's outputs, decides the new list
/// and builds `<node>.new/` with it.
fn prepare_generation(
    cfg: &ManagerConfig,
    node: &NodeName,
    record: &Record,
) -> anyhow::Result<site::Plan> {
    let f = Files::new(cfg, node);
    // Outputs of an interrupted attempt are discarded: the SQL is generated afresh.
    fsutil::remove_file(&f.sql_part)?;
    fsutil::remove_file(&f.sql)?;
    let request = Request::parse(record.request.as_bytes(), node)
        .map_err(|e| anyhow::anyhow!("the recorded request no longer parses: {e}"))?;
    let previous = if record.new_site {
        None
    } else {
        Some(
            site::read_tables(&cfg.site_dir(node))?
                .with_context(|| format!("the site directory of {node} has disappeared"))?,
        )
    };
    let plan = site::plan(previous.as_deref(), &request.series, cfg.allow_drop)
        .map_err(anyhow::Error::msg)?;
    let account = site_of(cfg, node)?;
    if let Some(t) = plan.added.iter().find(|t| !account.may_have(t)) {
        anyhow::bail!(
            "{t} is not among the tables this provider serves to site {node} (its [sites.{node}] tables in the manager's config)"
        );
    }
    site::prepare_new(&cfg.new_site_dir(node), &plan.tables)?;
    Ok(plan)
}

/// After the snapshot: takes the SQL file's digest, renames it into place and completes
/// `<node>.new/` (sequences, `since`). Returns the generation's notes and the digest.
fn publish_generation(
    cfg: &ManagerConfig,
    node: &NodeName,
    generated: sqlgen::Generated,
) -> anyhow::Result<(Vec<String>, Digest)> {
    let f = Files::new(cfg, node);
    let sqlgen::Generated {
        snapshot,
        notes,
        sequences,
    } = generated;
    // The digest is taken from the manager's own file: the exchange directory is sticky,
    // so the site can neither rename nor replace it, and a link is never followed.
    let digest = Digest::of(fsutil::open_own(&f.sql_part)?)
        .with_context(|| format!("reading back {}", f.sql_part.display()))?;
    std::fs::rename(&f.sql_part, &f.sql)
        .with_context(|| format!("renaming {} into place", f.sql_part.display()))?;
    fsutil::sync_dir(&cfg.exchange_dir(node))?;
    let new_dir = cfg.new_site_dir(node);
    site::write_sequences(&new_dir, &sequences)?;
    site::write_since(&new_dir, snapshot.counter)?;
    Ok((notes, digest))
}

/// Reads the site's `.sqlapplied` (or the operator's `cancel`). `None` while it is
/// absent or incomplete. A report that is not the site's own, or not bound to this
/// request, is refused and moved aside, and the request keeps waiting; an unreadable one
/// of the site's counts as a failure (the subscriber must not be left waiting forever).
fn read_applied(
    ctx: &DaemonContext,
    node: &NodeName,
    f: &Files,
    binding: Option<&Binding>,
) -> anyhow::Result<Option<Outcome>> {
    let cfg = &*ctx.cfg;
    if let Some(bytes) = fsutil::read_bounded(&f.cancel, MAX_TRIGGER_SIZE)? {
        fsutil::remove_file(&f.cancel)?;
        let reason = String::from_utf8_lossy(&bytes).trim().to_string();
        return Ok(Some(Outcome {
            success: false,
            reason: Some(reason),
        }));
    }
    let site = site_of(cfg, node)?;
    let parsed = match exchange::read_from_site(cfg, site, &f.sqlapplied, MAX_TRIGGER_SIZE)? {
        OtherSide::Missing => return Ok(None),
        OtherSide::Bytes(bytes) => Outcome::parse(&bytes),
        OtherSide::Refused(why) => {
            refuse(
                ctx,
                node,
                &f.sqlapplied,
                "forged-report",
                "a report that does not come from its site (still waiting for the site's own)",
                &why,
            )?;
            return Ok(None);
        }
    };
    match parsed {
        Ok(bound) => match match binding {
            Some(b) => bound.for_request(b, ".sqlapplied"),
            None => Ok(bound.body),
        } {
            Ok(o) => Ok(Some(o)),
            Err(e) => {
                refuse(
                    ctx,
                    node,
                    &f.sqlapplied,
                    "misbound-report",
                    "a report of another request (still waiting for this one's)",
                    &e.to_string(),
                )?;
                Ok(None)
            }
        },
        Err(TriggerError::Incomplete) => Ok(None),
        Err(e) => {
            tracing::warn!(error = %e, file = %f.sqlapplied.display(), "unreadable answer");
            Ok(Some(Outcome {
                success: false,
                reason: Some(format!("the .sqlapplied file is invalid: {e}")),
            }))
        }
    }
}

/// The test hook of the crash windows ([`slony_shared::crash`]).
fn crash_point(point: &str) {
    slony_shared::crash::point("SLONY_MANAGER_CRASH_AT", point);
}

/// Moves a site's file aside unread and raises an alert naming its writer.
fn refuse(
    ctx: &DaemonContext,
    node: &NodeName,
    path: &std::path::Path,
    tag: &str,
    what: &str,
    why: &str,
) -> anyhow::Result<()> {
    let cfg = &*ctx.cfg;
    let writer = exchange::writer_of(cfg, path);
    // Something that cannot be moved (a directory of the site's) is left where it is and
    // counts as nothing: it must not hold up the request or the operator's `cancel`.
    let done = match ctx.rejected.move_aside(cfg, path, tag) {
        Ok(target) => format!("It was moved to {} and not acted on.", target.display()),
        Err(e) => format!("It is not acted on, but cannot be moved aside: {e:#}"),
    };
    ctx.alerts.raise(
        cfg,
        node.as_str(),
        &format!("site {node}: refused {what}, written by {writer}"),
        &format!("{path:?} was written by {writer}: {why}. {done}"),
    );
    Ok(())
}

/// The `Finishing` step: promote or discard, clean up, write `.done`.
#[allow(clippy::too_many_arguments)]
fn finish(
    cfg: &ManagerConfig,
    cutter: &CutterHandle,
    node: &NodeName,
    f: &Files,
    binding: Option<&Binding>,
    new_site: bool,
    success: bool,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let current = cfg.site_dir(node);
    let new = cfg.new_site_dir(node);
    let done = if success {
        {
            // Under the cutter's lock: the copies from `since` on are re-cut with the new
            // list (see crate::cutter), and no cut straddles the rename. A std lock the
            // cutter may hold for a group's cut: this runs on the blocking pool.
            let _lists = cutter.lock_lists();
            crate::cutter::prepare_promotion(cfg, node)?;
            site::promote(&current, &new, &cfg.old_site_dir(node))?;
        }
        cutter.kick();
        exchange::prepare_archive_dir(cfg, site_of(cfg, node)?)?;
        tracing::info!(%node, new_site, "subscription changed");
        Outcome {
            success: true,
            reason: None,
        }
    } else {
        site::discard(&new)?;
        tracing::warn!(
            %node,
            new_site,
            reason = reason.as_deref().unwrap_or(""),
            "the subscriber could not apply the SQL; subscription unchanged"
        );
        Outcome {
            success: false,
            reason: Some(match reason {
                Some(r) => format!("the subscriber reported a failure: {r}"),
                None => "the subscriber reported a failure".into(),
            }),
        }
    };
    // `.done` first: a site looking at any moment finds the request either answered or
    // ended, never neither (it would send its request again).
    fsutil::write_atomic(&f.done, done.render(binding).as_bytes())?;
    fsutil::remove_file(&f.sql)?;
    fsutil::remove_file(&f.sqldone)?;
    fsutil::remove_site_entry(&f.sqlapplied);
    fsutil::remove_file(&f.cancel)
}
