//! `slony-receiver pull`: lock, honour the pause file, run the pull pipeline, alert.
//!
//! `--once` does one run (cron, systemd timer). Without it the command is a daemon: it
//! runs, sleeps the poll interval, and runs again; SIGTERM or SIGINT end it between
//! archives, never inside one. After a failure it waits longer before the next attempt,
//! soon for a failure that may clear by itself and slowly for one that needs an operator
//! ([`crate::backoff`]), and returns to the poll interval once a run succeeds.
//! SIGHUP reloads the configuration between runs (a bad file is refused and the old one
//! kept). The daemon can also run housekeeping on `[housekeeping] schedule` and serve
//! Prometheus metrics on `[pull] metrics_listen`.

use crate::alert::{Alerter, Failure};
use crate::backoff::{Backoff, Persistence};
use crate::config::ReceiverConfig;
use crate::exit;
use crate::housekeeping::{self, SiteRun};
use crate::local;
use crate::metrics::{self, Metrics};
use crate::promote;
use crate::pull::{self, PullError, Report};
use anyhow::Context;
use slony_shared::service;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Runs `pull`; returns the exit code. `reload` reads the configuration again (SIGHUP).
pub async fn run(
    cfg: &ReceiverConfig,
    reload: impl Fn() -> anyhow::Result<ReceiverConfig>,
    once: bool,
    fail_if_paused: bool,
) -> anyhow::Result<u8> {
    let _lock = match local::take_run_lock(cfg)? {
        Ok(lock) => lock,
        Err(held) => {
            tracing::warn!("{held}; exiting");
            eprintln!("slony-receiver: {held}");
            return Ok(exit::ALREADY_RUNNING);
        }
    };
    if let Some(text) = promote::refusal(cfg) {
        tracing::error!("{text}");
        eprintln!("slony-receiver: {text}");
        return Ok(exit::PROMOTED);
    }
    let alerter = Alerter::for_site(cfg);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_shutdown().await;
        let _ = stop_tx.send(true);
    });

    if once {
        if paused(cfg) {
            return Ok(if fail_if_paused {
                exit::PAUSED
            } else {
                exit::OK
            });
        }
        let result = pull::run_once(cfg, stop_rx).await;
        return Ok(conclude(cfg, &alerter, result).await.0);
    }

    Daemon::new(cfg.clone(), alerter)?
        .run(reload, stop_rx)
        .await
}

/// The pull daemon: its configuration (replaced on SIGHUP), alerting, metrics, schedule
/// of housekeeping and waits between runs.
struct Daemon {
    cfg: ReceiverConfig,
    alerter: Alerter,
    metrics: Arc<Metrics>,
    metrics_task: Option<JoinHandle<()>>,
    next_housekeeping: Option<chrono::DateTime<chrono::Utc>>,
    backoff: Backoff,
    /// The connections kept between runs.
    kept: pull::Kept,
}

impl Daemon {
    fn new(cfg: ReceiverConfig, alerter: Alerter) -> anyhow::Result<Daemon> {
        let metrics = Arc::new(Metrics::default());
        Ok(Daemon {
            metrics_task: serve_metrics(&cfg, &metrics),
            next_housekeeping: next_housekeeping(&cfg),
            backoff: Backoff::new(cfg.pull.poll_interval),
            kept: pull::Kept::default(),
            metrics,
            alerter,
            cfg,
        })
    }

    /// Runs until SIGTERM or SIGINT (`stop`), between archives.
    async fn run(
        mut self,
        reload: impl Fn() -> anyhow::Result<ReceiverConfig>,
        stop_rx: watch::Receiver<bool>,
    ) -> anyhow::Result<u8> {
        let mut hangup = hangup_signal()?;
        let mut stop = stop_rx.clone();
        // Ready before the first run: a catch-up may take hours, longer than any start
        // timeout. The watchdog then follows the runs' progress.
        service::spawn_watchdog();
        service::ready(&format!("started, site {}", self.cfg.node));
        loop {
            service::beat();
            let wait = self.pull(&stop_rx).await;
            service::beat();
            if *stop.borrow() {
                break;
            }
            self.housekeeping_if_due().await;
            let until_housekeeping = self
                .next_housekeeping
                .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
                .unwrap_or(wait);
            service::rest(wait.min(until_housekeeping));
            tokio::select! {
                _ = tokio::time::sleep(wait.min(until_housekeeping)) => {}
                _ = stop.changed() => {}
                _ = hangup.recv() => self.reload(&reload),
            }
            if *stop.borrow() {
                break;
            }
        }
        service::stopping();
        if let Some(task) = self.metrics_task {
            task.abort();
        }
        tracing::info!("shut down cleanly");
        Ok(exit::OK)
    }

    /// One run, unless paused; how long to wait before the next.
    async fn pull(&mut self, stop_rx: &watch::Receiver<bool>) -> std::time::Duration {
        if paused(&self.cfg) {
            service::status(&format!(
                "paused (the die file is present), counter {}",
                self.metrics
                    .counter
                    .load(std::sync::atomic::Ordering::Relaxed)
            ));
            return self.cfg.pull.poll_interval;
        }
        let result = pull::run_keeping(&self.cfg, stop_rx.clone(), &mut self.kept).await;
        record_metrics(&self.metrics, &result);
        let counter = self
            .metrics
            .counter
            .load(std::sync::atomic::Ordering::Relaxed);
        let line = status_line(&result, counter);
        let Some(persistence) = conclude(&self.cfg, &self.alerter, result).await.1 else {
            service::status(&line);
            return self.backoff.after_success();
        };
        let wait = self.backoff.after_failure(persistence);
        service::status(&format!("{line}, retry in {} s", wait.as_secs()));
        match persistence {
            Persistence::Transient => tracing::info!(retry_in_secs = wait.as_secs(), "will retry"),
            Persistence::Permanent => tracing::warn!(
                retry_in_secs = wait.as_secs(),
                "this failure needs an operator: retrying slowly (SIGHUP retries at once)"
            ),
        }
        wait
    }

    /// Housekeeping on `[housekeeping] schedule`, when it is due (not while paused).
    async fn housekeeping_if_due(&mut self) {
        if self
            .next_housekeeping
            .is_none_or(|at| at > chrono::Utc::now())
        {
            return;
        }
        if !paused(&self.cfg) {
            match housekeeping::run_site(&self.cfg).await {
                Ok(SiteRun::Done(s)) if s.failures.is_empty() => {}
                Ok(SiteRun::Paused(_)) => {}
                Ok(_) => tracing::warn!("scheduled housekeeping reported a problem"),
                Err(e) => tracing::error!("scheduled housekeeping failed: {e:#}"),
            }
        }
        self.next_housekeeping = next_housekeeping_after(&self.cfg, chrono::Utc::now());
    }

    /// SIGHUP: the configuration read again; a file that does not load, or that changes
    /// what the held lock stands for, is refused and the running one kept.
    fn reload(&mut self, reload: &impl Fn() -> anyhow::Result<ReceiverConfig>) {
        let new = match reload().and_then(|new| compatible(&self.cfg, new)) {
            Ok(new) => new,
            Err(e) => {
                tracing::error!("configuration NOT reloaded, keeping the running one: {e:#}");
                return;
            }
        };
        tracing::info!(config = %new.source.display(), "configuration reloaded");
        self.alerter = Alerter::for_site(&new);
        if new.pull.metrics_listen != self.cfg.pull.metrics_listen {
            if let Some(task) = self.metrics_task.take() {
                task.abort();
            }
            self.metrics_task = serve_metrics(&new, &self.metrics);
        }
        self.cfg = new;
        // The new file may name another provider or database.
        self.kept = pull::Kept::default();
        self.next_housekeeping = next_housekeeping_after(&self.cfg, chrono::Utc::now());
        self.backoff = Backoff::new(self.cfg.pull.poll_interval);
    }
}

/// A reloaded config may change anything but what the held lock and the files stand for.
fn compatible(old: &ReceiverConfig, new: ReceiverConfig) -> anyhow::Result<ReceiverConfig> {
    if new.lock_file() != old.lock_file() || new.site_dir() != old.site_dir() {
        anyhow::bail!(
            "cluster, node and local.log_dir cannot change while the daemon runs (it holds {}); restart it instead",
            old.lock_file().display()
        );
    }
    Ok(new)
}

/// The next scheduled housekeeping, if the config schedules one.
fn next_housekeeping(cfg: &ReceiverConfig) -> Option<chrono::DateTime<chrono::Utc>> {
    next_housekeeping_after(cfg, chrono::Utc::now())
}

fn next_housekeeping_after(
    cfg: &ReceiverConfig,
    after: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let at = cfg.housekeeping.schedule.as_ref()?.after(&after).next();
    if let Some(at) = at {
        tracing::info!(at = %at, "next scheduled housekeeping");
    }
    at
}

/// Starts the metrics endpoint if the config asks for one.
fn serve_metrics(cfg: &ReceiverConfig, metrics: &Arc<Metrics>) -> Option<JoinHandle<()>> {
    let addr = cfg.pull.metrics_listen?;
    let metrics = metrics.clone();
    Some(tokio::spawn(async move {
        if let Err(e) = metrics::serve(addr, metrics).await {
            tracing::error!(%addr, "cannot serve metrics: {e}");
        }
    }))
}

fn record_metrics(metrics: &Metrics, result: &Result<Report, PullError>) {
    match result {
        Ok(r) => metrics.success(
            r.to.0,
            r.applied,
            r.fetched_bytes,
            r.last_created
                .as_deref()
                .and_then(slony_shared::time::parse_pg_timestamp)
                .map(|micros| micros / 1_000_000),
        ),
        Err(_) => metrics.failure(),
    }
}

/// The line `systemctl status` shows after a run: `counter 1234, lag 3 archives`, and
/// when the last archive applied was created; or the last counter known (`counter`) and
/// why the run failed.
fn status_line(result: &Result<Report, PullError>, counter: u64) -> String {
    match result {
        Ok(r) => {
            let mut line = format!(
                "counter {}, lag {} archives",
                r.to,
                r.newest.0.saturating_sub(r.to.0)
            );
            if let Some(created) = &r.last_created {
                line.push_str(&format!(", last archive created {created}"));
            }
            line
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("");
            format!(
                "counter {counter}, last run failed: {}",
                truncate(first, 160)
            )
        }
    }
}

/// SIGHUP, for reloading the configuration.
fn hangup_signal() -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")
}

/// True (and logged) when the pause file exists.
fn paused(cfg: &ReceiverConfig) -> bool {
    let die = local::pause_file(cfg);
    if let Some(die) = &die {
        tracing::info!(file = %die.display(), "paused: the die file is present; not pulling");
    }
    die.is_some()
}

/// Logs the run's result, sends or withholds the alert, and picks the exit code; for a
/// failure, also whether waiting may cure it. The mail goes out on the blocking pool
/// (lettre's SMTP transport blocks).
async fn conclude(
    cfg: &ReceiverConfig,
    alerter: &Alerter,
    result: Result<Report, PullError>,
) -> (u8, Option<Persistence>) {
    match result {
        Ok(report) => {
            let a = alerter.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || a.report_success()).await {
                tracing::warn!("could not send the recovery mail: {e}");
            }
            tracing::debug!(applied = report.applied, counter = report.to.0, "run ok");
            (exit::OK, None)
        }
        Err(e) => {
            let text = chain(&e);
            tracing::error!(key = %e.alert_key(), "{text}");
            let first = text.lines().next().unwrap_or("").to_string();
            let persistence = Persistence::of_failure(&e);
            let failure = Failure {
                permanent: persistence == Persistence::Permanent,
                key: e.alert_key(),
                subject: format!("pull failed for site {} (cluster {}): {}", cfg.node, cfg.cluster, truncate(&first, 120)),
                body: format!("{text}\n\nThe replica is left at the last archive applied in full; nothing of the failing archive was applied.\nRun `slony-receiver status` for details."),
            };
            let a = alerter.clone();
            if let Ok(Err(mail_err)) =
                tokio::task::spawn_blocking(move || a.report_failure(&failure)).await
            {
                tracing::warn!("could not send the alert mail: {mail_err}");
            }
            (exit::for_class(e.class()), Some(persistence))
        }
    }
}

/// The error and its sources, one per line (`caused by: ...`), skipping sources whose
/// text the parent message already includes.
fn chain(e: &PullError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
        source = s.source();
    }
    text
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() > n {
        s.chars().take(n - 3).collect::<String>() + "..."
    } else {
        s.to_string()
    }
}

async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
