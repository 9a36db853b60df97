//! `slony-receiver verify --reference CONNINFO [--reference-password-env VAR] [--tables
//! s1.t1,s1.t2]`: is the replica's data the same as a reference database's (the provider,
//! or a copy of it)? The reference's password is best given through the environment: a
//! command line is visible to every local user.
//!
//! For each table (default: every replicated table, see [`crate::guard`]) both sides
//! compute the row count and a hash of the rows, in one `REPEATABLE READ READ ONLY`
//! transaction per side (the replica's position is read in the same snapshot), with the
//! same output settings (`TimeZone` UTC, ISO dates, hex bytea, shortest exact floats),
//! so a row prints the same text on both. The hash is the md5 of the count and of two
//! 60-bit sums of each row's md5 (`ROW(columns...)::text`, the replica's column order):
//! it does not depend on row order, so neither side sorts and memory stays constant
//! whatever the table's size. Columns are compared by name first.
//!
//! A reference that keeps changing (the live provider) differs by the archives the
//! replica has not applied yet: compare when both stand still, or read a difference
//! together with the replica's position printed first.
//!
//! Exit codes: 0 every table is the same; [`exit::DRIFT`] some table differs (or is
//! missing on one side); [`exit::DATABASE`] the reference cannot be reached.

use crate::config::ReceiverConfig;
use crate::exit;
use crate::guard;
use anyhow::Context;
use slony_shared::ident::QualifiedTable;
use tokio_postgres::Client;

/// Fixed output settings, so that both sides print the same value the same way.
const SESSION: &str =
    "SET TimeZone TO 'UTC'; SET DateStyle TO 'ISO, YMD'; SET IntervalStyle TO 'postgres'; \
     SET extra_float_digits TO 1; SET bytea_output TO 'hex'; \
     BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// One side's view of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Side {
    /// The table is not there.
    Missing,
    /// Its columns (in attnum order).
    Columns(Vec<String>),
}

/// Count and hash of a table on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digest {
    rows: i64,
    hash: String,
}

/// The verdict for one table.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Same(Digest),
    Differs(String),
}

/// Runs `verify`; returns the exit code.
pub async fn run(
    cfg: &ReceiverConfig,
    reference: &str,
    password: Option<&str>,
    tables: &[QualifiedTable],
) -> anyhow::Result<u8> {
    let replica = crate::replica::connect(cfg).await?;
    let where_ref = describe(reference);
    let reference = match connect_reference(cfg, reference, password).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "slony-receiver: cannot connect to the reference database ({where_ref}): {e:#}"
            );
            return Ok(exit::DATABASE);
        }
    };
    for (c, what) in [(&replica, "replica"), (&reference, "reference")] {
        c.batch_execute(SESSION).await.map_err(|e| {
            anyhow::anyhow!(
                "preparing the {what} session: {}",
                slony_shared::pg::describe_error(&e)
            )
        })?;
    }
    let position = crate::replica::read_position(&replica, &cfg.cluster).await?;
    let tables = if tables.is_empty() {
        guard::replicated_tables(&replica, &cfg.cluster)
            .await?
            .tables
    } else {
        tables.to_vec()
    };
    println!(
        "verify: replica of site {} at archive {} (created {}) against the reference {where_ref}",
        cfg.node,
        position.counter,
        position.created.as_deref().unwrap_or("unknown")
    );
    if tables.is_empty() {
        println!("no replicated tables found; nothing to compare");
        return Ok(exit::OK);
    }
    let width = tables
        .iter()
        .map(|t| t.to_string().len())
        .max()
        .unwrap_or(0);
    let mut differ = Vec::new();
    for t in &tables {
        let verdict = compare(&replica, &reference, t)
            .await
            .with_context(|| format!("comparing {t}"))?;
        match verdict {
            Verdict::Same(d) => println!(
                "  {:<width$}  same     {} rows, hash {}",
                t.to_string(),
                d.rows,
                d.hash
            ),
            Verdict::Differs(why) => {
                println!("  {:<width$}  DIFFERS  {why}", t.to_string());
                differ.push(t.to_string());
            }
        }
    }
    // Read-only transactions: nothing to commit.
    let _ = tokio::join!(
        replica.batch_execute("ROLLBACK"),
        reference.batch_execute("ROLLBACK")
    );
    if differ.is_empty() {
        println!("{} table(s) compared: all the same", tables.len());
        Ok(exit::OK)
    } else {
        println!(
            "{} table(s) compared: {} same, {} differ ({})",
            tables.len(),
            tables.len() - differ.len(),
            differ.len(),
            differ.join(", ")
        );
        Ok(exit::DRIFT)
    }
}

/// Compares one table on both sides.
async fn compare(
    replica: &Client,
    reference: &Client,
    t: &QualifiedTable,
) -> anyhow::Result<Verdict> {
    let (r, f) = tokio::join!(columns(replica, t), columns(reference, t));
    let (r, f) = (r.context("on the replica")?, f.context("on the reference")?);
    let cols = match (r, f) {
        (Side::Missing, Side::Missing) => {
            return Ok(Verdict::Differs(
                "missing on both the replica and the reference".into(),
            ))
        }
        (Side::Missing, _) => return Ok(Verdict::Differs("missing on the replica".into())),
        (_, Side::Missing) => return Ok(Verdict::Differs("missing on the reference".into())),
        (Side::Columns(r), Side::Columns(f)) => {
            let only_r: Vec<&String> = r.iter().filter(|c| !f.contains(c)).collect();
            let only_f: Vec<&String> = f.iter().filter(|c| !r.contains(c)).collect();
            if !only_r.is_empty() || !only_f.is_empty() {
                let list = |v: &[&String]| {
                    if v.is_empty() {
                        "-".to_string()
                    } else {
                        v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    }
                };
                return Ok(Verdict::Differs(format!(
                    "columns differ: only on the replica: {}; only on the reference: {}",
                    list(&only_r),
                    list(&only_f)
                )));
            }
            r
        }
    };
    let sql = digest_sql(t, &cols);
    let (r, f) = tokio::join!(digest(replica, &sql), digest(reference, &sql));
    let (r, f) = (r.context("on the replica")?, f.context("on the reference")?);
    if r == f {
        return Ok(Verdict::Same(r));
    }
    let rows = if r.rows == f.rows {
        format!("rows: {} on both", r.rows)
    } else {
        format!("rows: replica {}, reference {}", r.rows, f.rows)
    };
    Ok(Verdict::Differs(format!(
        "{rows}; hash: replica {}, reference {}",
        r.hash, f.hash
    )))
}

/// The table's columns, or [`Side::Missing`].
async fn columns(c: &Client, t: &QualifiedTable) -> anyhow::Result<Side> {
    let rows = c
        .query(
            "SELECT a.attname::text FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = pg_catalog.to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum",
            &[&t.quoted()],
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}", slony_shared::pg::describe_error(&e)))?;
    if rows.is_empty() {
        return Ok(Side::Missing);
    }
    Ok(Side::Columns(rows.iter().map(|r| r.get(0)).collect()))
}

/// The count-and-hash query of a table over `cols` (quoted, in this order).
fn digest_sql(t: &QualifiedTable, cols: &[String]) -> String {
    let row: Vec<String> = cols
        .iter()
        .map(|c| slony_shared::ident::quote_ident(c))
        .collect();
    let half = |from: u32| {
        format!("coalesce(sum(('x' || substr(h, {from}, 15))::bit(60)::bigint), 0)::text")
    };
    format!(
        "SELECT count(*), md5(count(*)::text || ':' || {} || ':' || {})
           FROM (SELECT md5(ROW({})::text) AS h FROM ONLY {}) r",
        half(1),
        half(16),
        row.join(", "),
        t.quoted()
    )
}

async fn digest(c: &Client, sql: &str) -> anyhow::Result<Digest> {
    let row = c
        .query_one(sql, &[])
        .await
        .map_err(|e| anyhow::anyhow!("{}", slony_shared::pg::describe_error(&e)))?;
    Ok(Digest {
        rows: row.get(0),
        hash: row.get(1),
    })
}

/// Connects to the reference database (TLS as its `sslmode` says), with
/// `password` if given (else the one in `conninfo`, if any).
async fn connect_reference(
    cfg: &ReceiverConfig,
    conninfo: &str,
    password: Option<&str>,
) -> anyhow::Result<Client> {
    let target = slony_shared::pg::Target {
        conninfo,
        password,
        timeout: cfg.database.connect_timeout,
        application_name: "slony-receiver verify",
    };
    let client = slony_shared::pg::connect(target).await?;
    Ok(client)
}

/// `host:port/dbname` of a connection string, without its password.
fn describe(conninfo: &str) -> String {
    let without_tls = slony_shared::pg::tls::split(conninfo).map(|(rest, _)| rest);
    let Ok(pg) = without_tls
        .as_deref()
        .unwrap_or(conninfo)
        .parse::<tokio_postgres::Config>()
    else {
        return "(unparsable connection string)".into();
    };
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        pg.get_dbname().or(pg.get_user()).unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_query_quotes_and_keeps_the_column_order() {
        let t = QualifiedTable::parse("s1.t1").unwrap();
        let sql = digest_sql(&t, &["id".into(), "we\"ird".into()]);
        assert!(
            sql.contains("md5(ROW(\"id\", \"we\"\"ird\")::text)"),
            "{sql}"
        );
        assert!(sql.contains("FROM ONLY \"s1\".\"t1\""), "{sql}");
    }

    #[test]
    fn reference_is_described_without_password() {
        let d = describe("host=db.example port=5433 user=ro password=secret dbname=prov");
        assert_eq!(d, "db.example:5433/prov");
        assert!(!describe("postgresql://ro:secret@db.example/prov").contains("secret"));
    }
}
