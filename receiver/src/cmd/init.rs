//! `slony-receiver init`: prepares a replica database for log shipping by hand.
//!
//! Creates the `"_<cluster>"` schema (what Slony's `slony1_dump.sh` creates: tracking
//! table, `sl_log_archive` with its apply trigger, the functions archives call) with the
//! replica at archive `--counter`, in one transaction. For a replica whose tables and
//! data were loaded some other way (a dump taken at that counter, or empty tables at 0);
//! `subscribe-series` does all of this itself. `--apply-role` is
//! [`crate::privilege::apply_role`].

use crate::config::ReceiverConfig;
use crate::exit;
use anyhow::Context;
use slony_shared::counter::Counter;
use slony_shared::offline;

/// Runs `init`; returns the exit code.
pub async fn run(cfg: &ReceiverConfig, counter: Counter, created: &str) -> anyhow::Result<u8> {
    let client = crate::replica::connect(cfg).await?;
    let schema = format!("_{}", cfg.cluster);
    let exists: bool = client
        .query_one(
            "SELECT to_regnamespace(quote_ident($1)) IS NOT NULL",
            &[&schema],
        )
        .await
        .context("checking the replica")?
        .get(0);
    if exists {
        eprintln!(
            "slony-receiver: schema {} already exists in the replica; nothing changed (drop it first to start over)",
            cfg.cluster.schema()
        );
        return Ok(exit::CONFIG);
    }
    let sql = format!(
        "BEGIN;\n{}{}COMMIT;",
        offline::tracking_schema_sql(&cfg.cluster),
        offline::tracking_row_sql(&cfg.cluster, counter, created)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| anyhow::anyhow!("{}", slony_shared::pg::describe_error(&e)))
        .context("creating the tracking schema")?;
    println!(
        "replica initialised for cluster {} at archive {counter}; the next archive applied is {}.\nOnce its tables hold the provider's data, run `slony-receiver guard on` to keep them read-only.",
        cfg.cluster,
        counter.next()
    );
    Ok(exit::OK)
}
