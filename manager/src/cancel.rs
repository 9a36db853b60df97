/*!
`slony-manager cancel`: withdraws a site's request whose subscriber went away.

A published request waits for the subscriber's `.sqlapplied` for as long as it takes
(a site may apply a large snapshot for hours). When the site is gone for good, the
provider's operator answers in its place: `cancel` writes `<subscribers_dir>/<node>.cancel`
(the manager's own directory: a report in the site's exchange directory must come from
the site's account), and the daemon (now, or when it next starts) rolls the request
back exactly as after a failure reported by the site: a new site disappears, an
existing one keeps its previous list.

Only a published request can be cancelled: one being generated is left to finish (run
`cancel` again once `status` shows it published), and one already finishing needs
nothing. Cancelling a site that is in fact still applying the SQL makes its answer
come too late; its `subscribe-series` then reports the cancellation.
*/

use crate::config::ManagerConfig;
use crate::fsutil;
use crate::request::{Record, RequestState};
use anyhow::{bail, Context};
use slony_shared::ident::NodeName;

/// Cancels `node`'s published request; returns the exit code (0).
///
/// # Errors
///
/// An invalid node name, no request in progress, a request not yet published, or the
/// answer cannot be written.
pub fn run(cfg: &ManagerConfig, node: &str, reason: Option<&str>) -> anyhow::Result<u8> {
    let node = NodeName::new(node).with_context(|| format!("site name {node:?}"))?;
    let Some(record) = Record::load(&cfg.state_file(&node), &node)? else {
        bail!("site {node} has no subscription request in progress: nothing to cancel");
    };
    match record.state {
        RequestState::Published { .. } => {}
        RequestState::Generating => bail!(
            "the SQL of {node}'s request is still being generated; run `cancel` again once \
             `slony-manager status` shows it published"
        ),
        RequestState::Finishing { .. } | RequestState::Rejected { .. } => {
            println!(
                "{node}: the request is already ending ({}); nothing to cancel",
                record.state.name()
            );
            return Ok(0);
        }
    }
    // The cancel is read before any report of the site's, so nothing the site put in
    // its directory can hold it up.
    let answer = cfg.cancel_file(&node);
    let why = match reason {
        Some(r) => format!("cancelled on the provider: {r}"),
        None => "cancelled on the provider by its operator".to_string(),
    };
    fsutil::write_atomic(&answer, format!("{why}\n").as_bytes())?;
    tracing::info!(%node, file = %answer.display(), "request cancelled");
    println!(
        "{node}: request cancelled; the daemon rolls it back ({})",
        if record.new_site {
            "a new site: it disappears"
        } else {
            "an existing site: it keeps its previous table list"
        }
    );
    Ok(0)
}
