//! Telling the manager's answers from anything else in the site's exchange directory.
//!
//! An answer is taken only if all of these hold (TRUST.md, "Answers are authentic"):
//!
//! - the exchange directory `<trigger_dir>/<node>/` is not writable by every account, and
//!   belongs to another account than this site's login (the manager's);
//! - the answer is a regular file owned by that account and not world-writable, as the
//!   open handle reports it;
//! - it names this site's node and the nonce of this very request, so an answer moved,
//!   copied or kept from another site's or an earlier request is refused;
//! - for `.sqldone`, the SQL file downloaded has the SHA-256 and size it states.
//!
//! A file that fails is refused with an alert naming its owner (the manager's own answer
//! to an earlier request of this site is only noted: it stays until the manager takes
//! the new request), and the command keeps waiting for the genuine answer: a planted
//! file can neither be applied nor end the request.

use super::Options;
use crate::provider::{Kind, Owner, Provider};
use anyhow::{bail, Context};
use slony_shared::trigger::{self, Binding, Bound, Digest, TriggerError};
use std::path::Path;

/// Largest answer file accepted from the provider.
const MAX_ANSWER: u64 = trigger::MAX_TRIGGER_SIZE as u64;

/// What an answer must be to be the manager's answer to this request.
pub struct Verifier {
    /// The manager's uid: the owner of the exchange directory.
    manager_uid: u32,
    /// The request the answers must name.
    binding: Binding,
}

impl Verifier {
    /// Checks the exchange directory `dir` and learns the manager's uid from it.
    /// `own_uid` is the uid this site's uploads get on the provider, if known.
    ///
    /// # Errors
    ///
    /// The directory is missing, writable by every account, or (unless `allow_shared`)
    /// owned by this site's own account.
    pub async fn new(
        remote: &Provider,
        parent: &str,
        dir: &str,
        own_uid: Option<u32>,
        allow_shared: bool,
        binding: Binding,
    ) -> anyhow::Result<Verifier> {
        let owner = remote.owner_of(dir).await?.with_context(|| {
            format!("the site's exchange directory {dir} does not exist on the provider: its manager makes it once the site is registered there ([sites.<node>] in the manager's config)")
        })?;
        if owner.kind != Kind::Dir {
            bail!(
                "{dir} on the provider is not a directory: refusing to exchange files through it"
            );
        }
        if owner.mode & 0o002 != 0 {
            bail!(
                "{dir} on the provider is writable by every account (mode {:o}): anyone there could plant answers. The provider must make it 3770 (slony-manager does)",
                owner.mode
            );
        }
        // Whoever may change the directory above could swap this one for their own.
        let above = remote.owner_of(parent).await?.with_context(|| {
            format!("the trigger directory {parent} does not exist on the provider")
        })?;
        if above.kind != Kind::Dir
            || above.mode & 0o022 != 0
            || (above.uid != owner.uid && above.uid != 0)
        {
            bail!(
                "the trigger directory {parent} on the provider may be changed by others than the manager (owner uid {}, mode {:o}): another account could swap this site's directory for its own. The provider must make it the manager's, mode 755",
                above.uid,
                above.mode
            );
        }
        if Some(owner.uid) == own_uid && !allow_shared {
            bail!(
                "{dir} on the provider belongs to this site's own login account (uid {}): the manager's answers cannot be told from files this account wrote. The provider must run slony-manager under an account of its own; set remote.allow_shared_account = true only to accept that any account sharing this login can forge answers",
                owner.uid
            );
        }
        Ok(Verifier {
            manager_uid: owner.uid,
            binding,
        })
    }

    /// Why a file is not the manager's, if it is not.
    pub fn not_from_manager(&self, owner: &Owner) -> Option<String> {
        if owner.kind != Kind::File {
            Some("it is not a regular file".into())
        } else if owner.uid != self.manager_uid {
            Some(format!(
                "it is owned by uid {}, not by the manager (uid {}, the owner of the exchange directory)",
                owner.uid, self.manager_uid
            ))
        } else if owner.mode & 0o002 != 0 {
            Some(format!(
                "it is writable by every account (mode {:o})",
                owner.mode
            ))
        } else {
            None
        }
    }

    /// The request answers must name.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }
}

/// What [`wait_for`] found.
pub enum Waited<T> {
    /// The manager's answer to this request.
    Got(T),
    /// None within the attempts; the files refused meanwhile, with why.
    TimedOut(Vec<String>),
}

/// Looks for the manager's answer at `path` up to `opts.attempts` times. Complete files
/// that are not the manager's answer to this request are refused (logged, with an alert)
/// and the wait goes on.
///
/// # Errors
///
/// An SSH error, or a file of the manager's that does not parse.
pub async fn wait_for<T>(
    remote: &Provider,
    path: &str,
    opts: &Options,
    what: &str,
    verifier: &Verifier,
    parse: impl Fn(&[u8]) -> Result<Bound<T>, TriggerError>,
) -> anyhow::Result<Waited<T>> {
    let mut refused = Refusals::default();
    for attempt in 1..=opts.attempts.max(1) {
        if let Some(body) = refused.take(path, look(remote, path, what, verifier, &parse).await?) {
            return Ok(Waited::Got(body));
        }
        if attempt < opts.attempts {
            tracing::debug!(attempt, of = opts.attempts, "waiting for {what}");
            tokio::time::sleep(opts.interval).await;
        }
    }
    Ok(Waited::TimedOut(refused.0))
}

/// The files refused during one wait, each reported once.
#[derive(Default)]
struct Refusals(Vec<String>);

impl Refusals {
    /// The answer one look found, if it is this request's; a refused file is reported
    /// (the first time): with an alert, or quietly for an earlier answer of this site's.
    fn take<T>(&mut self, path: &str, found: Option<Look<T>>) -> Option<T> {
        let (why, stale) = match found? {
            Look::Got(body) => return Some(body),
            Look::Refused(why) => (why, false),
            Look::Stale(why) => (why, true),
        };
        if !self.0.contains(&why) {
            if stale {
                tracing::info!(file = path, reason = %why, "not taken: an answer to an earlier request of this site; still waiting for this one's");
            } else {
                tracing::error!(file = path, reason = %why, "ALERT: refused a file that is not the manager's answer to this request; still waiting for the genuine one");
                eprintln!("slony-receiver: refused {path}: {why}");
            }
            self.0.push(why);
        }
        None
    }
}

/// What the manager said first to a request in flight.
pub enum First {
    /// Its SQL (or its refusal).
    SqlDone(slony_shared::trigger::SqlDone),
    /// Its final word: it has already ended the request (after a report this site sent
    /// but did not record, before a crash).
    Done(slony_shared::trigger::Outcome),
}

/// Waits for the manager's `.sqldone`, or for its `.done` if it has already ended the
/// request, as [`wait_for`] waits for one file.
///
/// # Errors
///
/// As [`wait_for`].
pub async fn wait_for_first(
    remote: &Provider,
    sqldone: &str,
    done: &str,
    opts: &Options,
    verifier: &Verifier,
) -> anyhow::Result<Waited<First>> {
    let mut refused = Refusals::default();
    for attempt in 1..=opts.attempts.max(1) {
        let found = look(
            remote,
            sqldone,
            "the SQL from the manager",
            verifier,
            &slony_shared::trigger::SqlDone::parse,
        )
        .await?;
        if let Some(a) = refused.take(sqldone, found) {
            return Ok(Waited::Got(First::SqlDone(a)));
        }
        let found = look(
            remote,
            done,
            "the manager's completion",
            verifier,
            &slony_shared::trigger::Outcome::parse,
        )
        .await?;
        if let Some(o) = refused.take(done, found) {
            return Ok(Waited::Got(First::Done(o)));
        }
        if attempt < opts.attempts {
            tracing::debug!(
                attempt,
                of = opts.attempts,
                "waiting for the SQL from the manager"
            );
            tokio::time::sleep(opts.interval).await;
        }
    }
    Ok(Waited::TimedOut(refused.0))
}

/// What one look at an answer's path found.
enum Look<T> {
    /// The manager's answer to this request.
    Got(T),
    /// A complete file that is not; why.
    Refused(String),
    /// The manager's answer to an earlier request of this site; why it is not taken.
    Stale(String),
}

/// Looks once at `path`: `None` while there is no complete file. A file that is not the
/// manager's is refused from its attributes alone, before it is opened (it may not even
/// be readable), and again from its open handle's.
async fn look<T>(
    remote: &Provider,
    path: &str,
    what: &str,
    verifier: &Verifier,
    parse: &impl Fn(&[u8]) -> Result<Bound<T>, TriggerError>,
) -> anyhow::Result<Option<Look<T>>> {
    let Some(before) = remote.owner_of(path).await? else {
        return Ok(None);
    };
    if let Some(why) = verifier.not_from_manager(&before) {
        return Ok(Some(Look::Refused(why)));
    }
    let (bytes, owner) = match remote.read_small_owned(path, MAX_ANSWER).await {
        Ok(Some(read)) => read,
        Ok(None) => return Ok(None),
        Err(crate::provider::RemoteError::Refused { reason, .. }) => {
            return Ok(Some(Look::Refused(reason)))
        }
        Err(e) => return Err(e.into()),
    };
    // A file without its end marker is still being written.
    if !trigger::is_complete(&bytes) {
        return Ok(None);
    }
    if let Some(why) = verifier.not_from_manager(&owner) {
        return Ok(Some(Look::Refused(why)));
    }
    Ok(Some(
        match parse(&bytes)
            .with_context(|| format!("reading {path}, {what}"))?
            .for_request(verifier.binding(), path)
        {
            Ok(body) => Look::Got(body),
            // The manager's answer to an earlier request of this site (it removes those
            // when it takes the new request), or one kept to be replayed: never taken.
            Err(e) if e.found.as_ref().is_some_and(|f| f.node == e.expected.node) => {
                Look::Stale(e.to_string())
            }
            Err(e) => Look::Refused(e.to_string()),
        },
    ))
}

/// Downloads the manager's SQL file to `local` and checks it is the one `.sqldone`
/// describes: the manager's file, of the stated size and SHA-256.
///
/// # Errors
///
/// The file is missing, not the manager's, or differs from the digest.
pub async fn download_sql(
    remote: &Provider,
    path: &str,
    local: &Path,
    verifier: &Verifier,
    expected: &Digest,
) -> anyhow::Result<()> {
    let owner = remote
        .owner_of(path)
        .await?
        .with_context(|| format!("the manager said the SQL is ready, but {path} is missing"))?;
    if let Some(why) = verifier.not_from_manager(&owner) {
        bail!("refused {path}: {why}; nothing of it was applied");
    }
    if owner.size != expected.size {
        bail!(
            "refused {path}: it is {} bytes, but the manager's answer says {}; nothing of it was applied",
            owner.size,
            expected.size
        );
    }
    remote.download(path, local, owner.size).await?;
    // Hashing reads the whole file: off the async workers.
    let file = local.to_path_buf();
    let got = tokio::task::spawn_blocking(move || std::fs::File::open(&file).and_then(Digest::of))
        .await
        .context("hashing the SQL")?
        .with_context(|| format!("reading back {}", local.display()))?;
    if &got != expected {
        let _ = std::fs::remove_file(local);
        bail!(
            "refused {path}: its SHA-256 is {}, but the manager's answer says {}: it is not the SQL the manager published; nothing of it was applied",
            got.sha256,
            expected.sha256
        );
    }
    Ok(())
}
