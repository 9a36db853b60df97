/*!
The state of one subscription request, persisted in `<subscribers_dir>/<node>.request.json`.

```text
                 .tgr valid                 SQL + .sqldone           .sqlapplied
   (no file) ──────────────▶ Generating ─────────────────▶ Published ─────────────▶ Finishing
       │                        │   generation failed        (announced)              │
       │ .tgr invalid           ▼                                                      │ promote or
       └──────────────────▶ Rejected ──▶ .sqldone Failed, (no file)                   ▼ discard, .done
                                                                                   (no file)
```

- **Generating**: the `.tgr` is still in place and `<node>.new/` holds the new list. A
  restart discards partial outputs and generates again from the request.
- **Published**: `<node>.sql.gz` is complete and `since` is written. `announced` becomes
  true once `.sqldone` is written and the `.tgr` removed; until then a restart redoes both.
  The state is persisted *before* `.sqldone` appears, so a subscriber can never apply SQL
  the manager has forgotten about.
- **Finishing**: the subscriber's answer is recorded; promote or discard, clean up, write
  `.done`, then the file is removed. Every step may be repeated.
- **Rejected**: refused or failed before anything was published; reply with a failed
  `.sqldone`, remove the `.tgr`, then the file is removed.

[`next`] is the whole transition table, pure; [`Record::save`] persists a state with a
temporary name and a rename after every transition. [`flow`] is the I/O half: the step
each state calls for.
*/

use crate::fsutil;
use anyhow::Context;
use serde::{Deserialize, Serialize};
use slony_shared::ident::NodeName;
use std::path::Path;

pub mod flow;

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RequestState {
    /// Accepted; the SQL is being generated.
    Generating,
    /// The SQL is published; waiting for `.sqlapplied`.
    Published {
        /// The archive counter the snapshot corresponds to.
        counter: u64,
        /// The notes sent in `.sqldone`.
        notes: Vec<String>,
        /// SHA-256 of the published SQL file (sent in `.sqldone`); empty in a state
        /// recorded by an older version (then taken from the file when announcing).
        #[serde(default)]
        sha256: String,
        /// Its size in bytes.
        #[serde(default)]
        size: u64,
        /// Whether `.sqldone` has been written and the `.tgr` removed.
        announced: bool,
    },
    /// The subscriber answered; promote or discard, then write `.done`.
    Finishing {
        /// Whether the subscriber applied the SQL.
        success: bool,
        /// The subscriber's reason (or why its answer was unreadable).
        reason: Option<String>,
    },
    /// Refused or failed before publishing; reply with a failed `.sqldone`.
    Rejected {
        /// Why (sent to the subscriber).
        reason: String,
    },
}

impl RequestState {
    /// A short name for logs and `status`.
    pub fn name(&self) -> &'static str {
        match self {
            RequestState::Generating => "generating",
            RequestState::Published { .. } => "published",
            RequestState::Finishing { .. } => "finishing",
            RequestState::Rejected { .. } => "rejected",
        }
    }
}

/// What happened to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete, valid `.tgr` with no request in progress.
    Accepted,
    /// The `.tgr` is invalid, or the generation failed.
    Refused {
        /// Why.
        reason: String,
    },
    /// The SQL is complete and renamed into place.
    Generated {
        /// The snapshot counter.
        counter: u64,
        /// Notes for `.sqldone`.
        notes: Vec<String>,
        /// SHA-256 of the SQL file.
        sha256: String,
        /// Its size.
        size: u64,
    },
    /// `.sqldone` is written and the `.tgr` removed.
    Announced,
    /// The subscriber's `.sqlapplied` arrived.
    Applied {
        /// Whether the SQL applied.
        success: bool,
        /// Its reason.
        reason: Option<String>,
    },
    /// The terminal reply (`.sqldone` failed, or `.done`) is written: forget the request.
    Closed,
}

/// An event that makes no sense in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {event} is not expected in state {state}")]
pub struct BadTransition {
    /// The state name (or "none").
    pub state: &'static str,
    /// The event, for the message.
    pub event: String,
}

/// The transition table. `None` means "no request in progress" (no state file).
///
/// # Errors
///
/// [`BadTransition`] when the event is not expected in that state.
pub fn next(
    state: Option<&RequestState>,
    event: Event,
) -> Result<Option<RequestState>, BadTransition> {
    use RequestState as S;
    let bad = |event: &Event| BadTransition {
        state: state.map_or("none", RequestState::name),
        event: format!("{event:?}"),
    };
    match (state, event) {
        (None, Event::Accepted) => Ok(Some(S::Generating)),
        (None | Some(S::Generating), Event::Refused { reason }) => Ok(Some(S::Rejected { reason })),
        (
            Some(S::Generating),
            Event::Generated {
                counter,
                notes,
                sha256,
                size,
            },
        ) => Ok(Some(S::Published {
            counter,
            notes,
            sha256,
            size,
            announced: false,
        })),
        (Some(p @ S::Published { .. }), Event::Announced) => {
            let mut p = p.clone();
            if let S::Published { announced, .. } = &mut p {
                *announced = true;
            }
            Ok(Some(p))
        }
        (Some(S::Published { .. }), Event::Applied { success, reason }) => {
            Ok(Some(S::Finishing { success, reason }))
        }
        (Some(S::Finishing { .. } | S::Rejected { .. }), Event::Closed) => Ok(None),
        (_, event) => Err(bad(&event)),
    }
}

/// The persisted form: the state plus what is needed to carry on after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The requesting site (also the file's name; checked on load).
    pub node: String,
    /// Whether the site had no `<node>/` when the request was accepted.
    pub new_site: bool,
    /// The request as received (the validated `.tgr` text; empty if it was refused).
    pub request: String,
    /// Where the request stands.
    #[serde(flatten)]
    pub state: RequestState,
    /// When the request was accepted (Unix seconds).
    pub accepted_at: u64,
    /// When the state last changed (Unix seconds).
    pub updated_at: u64,
}

/// Now, in Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Record {
    /// The record of a request just seen: `event` is [`Event::Accepted`] or
    /// [`Event::Refused`].
    ///
    /// # Errors
    ///
    /// [`BadTransition`] for any other event.
    pub fn start(
        node: &NodeName,
        new_site: bool,
        request: String,
        event: Event,
    ) -> Result<Self, BadTransition> {
        let state = next(None, event.clone())?.ok_or_else(|| BadTransition {
            state: "none",
            event: format!("{event:?}"),
        })?;
        Ok(Self::new(node, new_site, request, state))
    }

    /// A record in `state`.
    pub fn new(node: &NodeName, new_site: bool, request: String, state: RequestState) -> Self {
        let t = now();
        Record {
            node: node.to_string(),
            new_site,
            request,
            state,
            accepted_at: t,
            updated_at: t,
        }
    }

    /// Applies `event` and returns the record for the new state (`None`: request over).
    ///
    /// # Errors
    ///
    /// [`BadTransition`] from [`next`].
    pub fn apply(&self, event: Event) -> Result<Option<Record>, BadTransition> {
        Ok(next(Some(&self.state), event)?.map(|state| Record {
            state,
            updated_at: now(),
            ..self.clone()
        }))
    }

    /// Writes the record atomically to `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let mut json = serde_json::to_vec_pretty(self).context("encoding the request state")?;
        json.push(b'\n');
        fsutil::write_atomic(path, &json)
    }

    /// Reads the record of `node` from `path`; `Ok(None)` if there is none.
    ///
    /// # Errors
    ///
    /// The file is unreadable, not a record, or names another node.
    pub fn load(path: &Path, node: &NodeName) -> anyhow::Result<Option<Record>> {
        let Some(bytes) = fsutil::read_bounded(path, 1024 * 1024)? else {
            return Ok(None);
        };
        let r: Record = serde_json::from_slice(&bytes)
            .with_context(|| format!("request state {} is damaged", path.display()))?;
        if r.node != node.as_str() {
            anyhow::bail!(
                "request state {} names node {:?}, not {node}",
                path.display(),
                r.node
            );
        }
        Ok(Some(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published(announced: bool) -> RequestState {
        RequestState::Published {
            counter: 42,
            notes: vec!["n".into()],
            sha256: "ab".repeat(32),
            size: 7,
            announced,
        }
    }

    #[test]
    fn the_happy_path() {
        let s = next(None, Event::Accepted).unwrap();
        assert_eq!(s, Some(RequestState::Generating));
        let s = next(
            s.as_ref(),
            Event::Generated {
                counter: 42,
                notes: vec!["n".into()],
                sha256: "ab".repeat(32),
                size: 7,
            },
        )
        .unwrap();
        assert_eq!(s, Some(published(false)));
        let s = next(s.as_ref(), Event::Announced).unwrap();
        assert_eq!(s, Some(published(true)));
        // Announcing again (a restart) changes nothing.
        assert_eq!(next(s.as_ref(), Event::Announced).unwrap(), s);
        let s = next(
            s.as_ref(),
            Event::Applied {
                success: true,
                reason: None,
            },
        )
        .unwrap();
        assert_eq!(
            s,
            Some(RequestState::Finishing {
                success: true,
                reason: None
            })
        );
        assert_eq!(next(s.as_ref(), Event::Closed).unwrap(), None);
    }

    #[test]
    fn refusals() {
        let refused = Event::Refused {
            reason: "bad".into(),
        };
        let rejected = Some(RequestState::Rejected {
            reason: "bad".into(),
        });
        assert_eq!(next(None, refused.clone()).unwrap(), rejected);
        assert_eq!(
            next(Some(&RequestState::Generating), refused.clone()).unwrap(),
            rejected
        );
        assert_eq!(next(rejected.as_ref(), Event::Closed).unwrap(), None);
        // Once published, the request can no longer be refused: only the subscriber's
        // answer ends it.
        assert!(next(Some(&published(true)), refused).is_err());
    }

    #[test]
    fn unexpected_events_are_errors() {
        let applied = Event::Applied {
            success: true,
            reason: None,
        };
        assert!(next(None, applied.clone()).is_err());
        assert!(next(Some(&RequestState::Generating), applied.clone()).is_err());
        assert!(next(None, Event::Closed).is_err());
        assert!(next(Some(&RequestState::Generating), Event::Closed).is_err());
        assert!(next(Some(&published(true)), Event::Closed).is_err());
        assert!(next(Some(&published(true)), Event::Accepted).is_err());
        assert!(next(Some(&RequestState::Generating), Event::Accepted).is_err());
        let finishing = RequestState::Finishing {
            success: false,
            reason: None,
        };
        assert!(next(Some(&finishing), applied).is_err());
        let err = next(Some(&finishing), Event::Announced).unwrap_err();
        assert!(err.to_string().contains("finishing"), "{err}");
    }

    #[test]
    fn records_round_trip_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeName::new("site1").unwrap();
        let path = dir.path().join("site1.request.json");
        assert!(Record::load(&path, &node).unwrap().is_none());
        let r = Record::new(
            &node,
            true,
            "node site1\nnonce 0123456789abcdef0123456789abcdef\ns1.t1 subscribe\nEOF\n".into(),
            RequestState::Generating,
        );
        r.save(&path).unwrap();
        assert_eq!(Record::load(&path, &node).unwrap().unwrap(), r);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"state\": \"generating\""), "{text}");
        let r2 = r
            .apply(Event::Generated {
                counter: 42,
                notes: vec![],
                sha256: "ab".repeat(32),
                size: 7,
            })
            .unwrap()
            .unwrap();
        r2.save(&path).unwrap();
        assert_eq!(Record::load(&path, &node).unwrap().unwrap().state, r2.state);
        let other = NodeName::new("site2").unwrap();
        assert!(Record::load(&path, &other).is_err());
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(Record::load(&path, &node).is_err());
    }
}
