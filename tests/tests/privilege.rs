//! Least privilege on the replica: an ordinary role set up with `slony-receiver init
//! --apply-role` applies archives (DDL included), verifies and subscribes; the payloads a
//! compromised provider could send are live for a superuser and refused for that role;
//! functions an unprivileged user plants in `public` do not reach the pinned Slony
//! functions; and a superuser applier is warned about.

use crate::support::manager::{ManagerDaemon, ManagerToml};
use crate::support::pg::PgServer;
use crate::support::receiver::{database_toml, run_receiver, Run};
use crate::support::site::{ConfigChange, Options, Site, CLUSTER, NODE};
use crate::support::ssh::SshServer;
use crate::support::workload::{self, Change, Format};
use crate::support::TestDir;
use bytes::Bytes;
use futures_util::SinkExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio_postgres::error::SqlState;

/// The ordinary role the DBA sets up.
const ROLE: &str = "slony_apply";
/// The columns Slony COPYs into `sl_log_archive`.
const LOG_COLUMNS: &str = "log_origin, log_txid, log_tableid, log_actionseq, log_tablenspname, \
                           log_tablerelname, log_cmdtype, log_cmdupdncols, log_cmdargs";
/// What the superuser warning says.
const SUPERUSER_WARNING: &str = "is a superuser: SQL from the provider";

/// Copies the site's config (which connects as the superuser `postgres`) for the DBA, and
/// points the site's own config at [`ROLE`]. Returns the DBA's config.
fn split_configs(site: &Site) -> PathBuf {
    let dba = site.dir.join("dba.toml");
    std::fs::copy(&site.config, &dba).unwrap();
    let database = database_toml(site.pg.port(), ROLE, "replica");
    site.write_config(ConfigChange {
        database: Some(&database),
        ..ConfigChange::default()
    });
    dba
}

/// `slony-receiver init --apply-role ROLE` with the DBA's config, and more arguments.
fn apply_role(dba: &Path, more: &[&str]) -> Run {
    let mut args = vec!["--apply-role", ROLE];
    args.extend_from_slice(more);
    run_receiver(dba, "init", &args)
}

/// One `sl_log_archive` row carrying the DDL statement `sql` (cmdtype 'S'), as COPY text.
fn ddl_row(sql: &str, actionseq: u64) -> String {
    let element = format!("\"{}\"", sql.replace('\\', "\\\\").replace('"', "\\\""));
    let field = format!("{{{element}}}")
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n");
    format!("1\t9{actionseq}\t\\N\t{actionseq}\t\\N\t\\N\tS\t\\N\t{field}\n")
}

/// Archive `counter` of the site's stream with `rows` added at the end of its COPY block.
fn publish_with_rows(site: &Site, counter: u64, rows: &str) {
    let text = workload::render(
        CLUSTER,
        counter,
        &site.stream[(counter - 1) as usize],
        Format::Copy22,
    );
    let end = text.find("\n\\.\n").expect("the COPY terminator") + 1;
    let text = format!("{}{rows}{}", &text[..end], &text[end..]);
    std::fs::write(site.provider.join(workload::archive_name(counter)), text).unwrap();
}

/// COPYs `rows` into `"_<cluster>".sl_log_archive` as the archives do (replica role, so
/// the apply trigger fires), bypassing the receiver's checks on purpose.
async fn copy_rows(
    client: &tokio_postgres::Client,
    rows: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute("SET session_replication_role TO replica")
        .await?;
    let sink = client
        .copy_in::<_, Bytes>(&format!(
            "COPY \"_{CLUSTER}\".sl_log_archive ({LOG_COLUMNS}) FROM STDIN"
        ))
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(rows.to_string())).await?;
    sink.finish().await.map(|_| ())
}

/// Whether `role` is a superuser.
async fn is_superuser(pg: &PgServer, role: &str) -> bool {
    pg.connect("postgres")
        .await
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&role])
        .await
        .unwrap()
        .get(0)
}

/// The owner of relation `name` in the replica.
async fn owner_of(c: &tokio_postgres::Client, name: &str) -> String {
    c.query_one(
        "SELECT pg_get_userbyid(relowner)::text FROM pg_class WHERE oid = $1::text::regclass",
        &[&name],
    )
    .await
    .unwrap_or_else(|e| panic!("{name}: {e}"))
    .get(0)
}

/// An existing replica (tables and tracking schema made by the superuser) handed to an
/// ordinary role: refused with what to do before, then pull with DDL, verify and guard
/// as that role; `init --apply-role` run twice only repairs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_role_pulls_ddl_verifies_and_guards_as_an_ordinary_role() {
    let site = Site::start(
        "priv-apply",
        Options {
            archives: 13,
            ..Options::default()
        },
    )
    .await;
    let dba = split_configs(&site);
    let su = site.pg.connect("replica").await;
    su.batch_execute(&format!("CREATE ROLE {ROLE} LOGIN"))
        .await
        .unwrap();
    site.publish(1, 6);

    // Before the set-up: refused up front, naming the fix, not blaming an archive.
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "may not SET session_replication_role, which applying the provider's SQL needs: have a superuser run `slony-receiver init --apply-role {ROLE}`"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("slony1_log_2_"), "{}", run.stderr);
    assert_eq!(site.counter().await, 0);

    let run = apply_role(&dba, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for line in [
        &format!("role {ROLE} exists"),
        "granted SET on parameter session_replication_role",
        "granted CONNECT, CREATE on database replica",
        "re-created the functions of \"_lab\" (search_path pinned to pg_catalog, pg_temp)",
        &format!("{ROLE} owns schema \"_lab\" and everything in it (changed: _lab, _lab.sl_archive_tracking,"),
        &format!(
            "{ROLE} owns the 2 replicated table(s) (changed: s1.t1, s1.t2) and 1 sequence(s) (changed: s1.seq1)"
        ),
        "granted USAGE, CREATE on schema(s) s1",
    ] {
        assert!(run.stdout.contains(line), "missing {line:?} in:\n{}", run.stdout);
    }
    // Idempotent: the second run finds nothing to hand over.
    let run = apply_role(&dba, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "{ROLE} owns schema \"_lab\" and everything in it (nothing to change)"
        )),
        "{}",
        run.stdout
    );
    assert!(run
        .stdout
        .contains("(nothing to change) and 1 sequence(s) (nothing to change)"));
    assert!(!is_superuser(&site.pg, ROLE).await);

    // The DDL of archive 7 names its tables unqualified, for the role's search_path.
    su.batch_execute(&format!("ALTER ROLE {ROLE} SET search_path = s1, public"))
        .await
        .unwrap();
    site.publish(8, 12);
    publish_with_rows(
        &site,
        7,
        &format!(
            "{}{}",
            ddl_row("COMMENT ON TABLE t2 IS 'from an EXECUTE SCRIPT'", 1),
            ddl_row("CREATE INDEX t1_txt_ddl ON t1 (txt)", 2)
        ),
    );
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains(SUPERUSER_WARNING), "{}", run.stderr);
    assert_eq!(site.counter().await, 12);
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(12).await
    );
    let comment: Option<String> = su
        .query_one("SELECT obj_description('s1.t2'::regclass, 'pg_class')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("from an EXECUTE SCRIPT"));
    assert_eq!(owner_of(&su, "s1.t1_txt_ddl").await, ROLE);

    // With the provider's DDL search path set (`pull.ddl_search_path`), DDL rows take it,
    // whatever the role's own: the unqualified `t1` is s1.t1 (with the role's default,
    // "$user", public, it would not be found).
    su.batch_execute(&format!("ALTER ROLE {ROLE} RESET search_path"))
        .await
        .unwrap();
    let database = database_toml(site.pg.port(), ROLE, "replica");
    site.write_config(ConfigChange {
        database: Some(&database),
        extra: "[pull]\nddl_search_path = [\"s1\"]\n",
        ..ConfigChange::default()
    });
    publish_with_rows(
        &site,
        13,
        &ddl_row("COMMENT ON TABLE t1 IS 'resolved in s1'", 3),
    );
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 13);
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(13).await
    );
    let comment: Option<String> = su
        .query_one("SELECT obj_description('s1.t1'::regclass, 'pg_class')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("resolved in s1"));

    let expected = site.pg.conninfo("expected");
    let run = site.run(&["verify", "--reference", &expected]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("2 table(s) compared: all the same"),
        "{}",
        run.stdout
    );
    let run = site.run(&["guard", "on"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = site.run(&["status"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
}

/// A new site: the DBA gives an ordinary role the database (no tracking schema), and the
/// role subscribes through a real manager, then pulls and verifies against the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_site_subscribes_pulls_and_verifies_as_an_ordinary_role() {
    const SNAPSHOT: u64 = 20;
    let dir = TestDir::new("priv-subscribe");
    let root = dir.mkdir("provider");
    for d in ["triggers", "subscribers", "site_logs"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // The site's exchange directory (the manager makes it too, maybe after the test
    // has started the receiver).
    std::fs::create_dir_all(root.join("triggers").join(NODE)).unwrap();
    let pg = PgServer::start();
    pg.create_db("provider").await;
    pg.create_db("replica").await;
    let stream: Vec<Vec<Change>> = workload::generate(30, 5)
        .into_iter()
        .map(|cs| {
            cs.into_iter()
                .filter(|c| !matches!(c, Change::SetSeq(_)))
                .collect()
        })
        .collect();
    let provider = pg.connect("provider").await;
    provider
        .batch_execute(&format!(
            "{}
             CREATE SCHEMA \"_{CLUSTER}\";
             CREATE TABLE \"_{CLUSTER}\".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);
             INSERT INTO \"_{CLUSTER}\".sl_archive_counter VALUES ({SNAPSHOT}, '2026-11-21 10:00:20+00');\n{}",
            workload::SCHEMA_SQL,
            crate::support::slony_set_sql(CLUSTER, &["s1.t1", "s1.t2"])
        ))
        .await
        .unwrap();
    workload::apply_expected(&provider, &stream, SNAPSHOT).await;
    let manager_config = dir.join("manager.toml");
    ManagerToml::under(&root, CLUSTER, pg.port(), "provider")
        .key("rescan_interval_secs", 1)
        .sites(crate::support::shared_sites_toml(&[NODE]))
        .write(&manager_config);
    let _manager = ManagerDaemon::spawn(
        &mut ManagerDaemon::run_command(&manager_config),
        &dir.join("manager.log"),
    );
    let ssh = SshServer::start(&root);
    let receiver_toml = |user: &str| {
        format!(
            "cluster = \"{CLUSTER}\"\nnode = \"{NODE}\"\n[remote]\nhost = \"127.0.0.1\"\nport = {}\nuser = \"{}\"\nkey_file = \"{}\"\nknown_hosts = \"{}\"\nlog_dir = \"{r}/site_logs\"\ntrigger_dir = \"{r}/triggers\"\nallow_shared_account = true\n[local]\nlog_dir = \"{}\"\n[database]\n{}",
            ssh.port(),
            ssh.user(),
            ssh.client_key().display(),
            ssh.known_hosts().display(),
            dir.join("local").display(),
            database_toml(pg.port(), user, "replica"),
            r = root.display(),
        )
    };
    let dba = dir.join("dba.toml");
    std::fs::write(&dba, receiver_toml("postgres")).unwrap();
    let config = dir.join("receiver.toml");
    std::fs::write(&config, receiver_toml(ROLE)).unwrap();

    let run = apply_role(&dba, &["--no-schema"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run
        .stdout
        .contains(&format!("created role {ROLE} (LOGIN, no password")));
    assert!(run.stdout.contains(&format!(
        "no tracking schema \"_{CLUSTER}\": subscribe-series creates it, run as {ROLE}"
    )));

    let list = dir.join("list.txt");
    std::fs::write(&list, "s1.t1 subscribe\ns1.t2 subscribe\n").unwrap();
    let run = run_receiver(
        &config,
        "subscribe-series",
        &[
            "--list",
            list.to_str().unwrap(),
            "--attempts",
            "60",
            "--interval-secs",
            "1",
        ],
    );
    let manager_log = || std::fs::read_to_string(dir.join("manager.log")).unwrap_or_default();
    assert_eq!(
        run.code,
        0,
        "{}\nmanager log:\n{}",
        run.stderr,
        manager_log()
    );
    assert!(!run.stderr.contains(SUPERUSER_WARNING), "{}", run.stderr);
    let replica = pg.connect("replica").await;
    for object in [
        "s1.t1",
        "s1.t2",
        "\"_lab\".sl_archive_tracking",
        "\"_lab\".sl_log_archive",
    ] {
        assert_eq!(owner_of(&replica, object).await, ROLE, "{object}");
    }
    let guarded: i64 = replica
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'slony_receiver_guard'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(guarded, 2, "subscribe-series guarded both tables as {ROLE}");

    let site_logs = root.join("site_logs").join(NODE);
    std::fs::create_dir_all(&site_logs).unwrap();
    workload::write_archives(&site_logs, CLUSTER, &stream, SNAPSHOT + 1, 30, |_| {
        Format::Copy22
    });
    let run = run_receiver(&config, "pull", &["--once"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    workload::apply_expected(&provider, &stream[SNAPSHOT as usize..], 30 - SNAPSHOT).await;
    let run = run_receiver(
        &config,
        "verify",
        &["--reference", &pg.conninfo("provider")],
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("at archive 30"), "{}", run.stdout);
    assert!(
        run.stdout.contains("2 table(s) compared: all the same"),
        "{}",
        run.stdout
    );
}

/// What a compromised provider could send in an 'S' row, written into sl_log_archive
/// directly (the path a receiver-side classifier would guard, bypassed on purpose): live
/// for a superuser, refused by privilege for the apply role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_payloads_run_for_a_superuser_and_are_refused_for_the_apply_role() {
    let site = Site::start(
        "priv-payload",
        Options {
            archives: 2,
            ..Options::default()
        },
    )
    .await;
    let dba = split_configs(&site);
    let run = apply_role(&dba, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // Somewhere the server's OS user may create files.
    let drop_dir = site.dir.mkdir("drop");
    std::fs::set_permissions(&drop_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let program = |name: &str| {
        format!(
            // `cat` reads what COPY writes: no broken pipe.
            "COPY (SELECT 1) TO PROGRAM 'cat > {}'",
            drop_dir.join(name).display()
        )
    };
    let su = site.pg.connect("replica").await;
    su.batch_execute("CREATE ROLE victim LOGIN NOSUPERUSER")
        .await
        .unwrap();

    // As a superuser the payloads are live: a shell command, a new superuser.
    copy_rows(&su, &ddl_row(&program("as_superuser"), 1))
        .await
        .expect("COPY TO PROGRAM as a superuser");
    assert!(drop_dir.join("as_superuser").exists());
    copy_rows(&su, &ddl_row("ALTER ROLE victim SUPERUSER", 2))
        .await
        .expect("ALTER ROLE as a superuser");
    assert!(is_superuser(&site.pg, "victim").await);

    // As the apply role: refused by privilege, nothing done.
    let role = site.pg.connect_as("replica", ROLE, None).await;
    for (payload, what) in [
        (program("as_apply_role"), "COPY TO PROGRAM"),
        (
            format!("ALTER ROLE {ROLE} SUPERUSER"),
            "ALTER ROLE SUPERUSER",
        ),
    ] {
        let err = copy_rows(&role, &ddl_row(&payload, 3))
            .await
            .expect_err(what);
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{what}: {err:?}"
        );
    }
    assert!(!drop_dir.join("as_apply_role").exists());
    assert!(!is_superuser(&site.pg, ROLE).await);

    // Through `pull`, with the operator allowing DO blocks: the classifier lets the
    // block through (and logs it), and the privilege boundary still holds.
    site.write_config(ConfigChange {
        database: Some(&database_toml(site.pg.port(), ROLE, "replica")),
        extra: "[sql]\nallow = [\"do\"]\n",
        ..ConfigChange::default()
    });
    let block = format!(
        "DO $x$ BEGIN EXECUTE $y${}$y$; EXECUTE 'ALTER ROLE {ROLE} SUPERUSER'; END $x$",
        program("through_pull")
    );
    publish_with_rows(&site, 1, &ddl_row(&block, 6));
    let run = site.pull();
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("uses an allowance of [sql] allow: a DO block"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("permission denied") || run.stderr.contains("must be superuser"),
        "{}",
        run.stderr
    );
    assert!(!drop_dir.join("through_pull").exists());
    assert!(!is_superuser(&site.pg, ROLE).await);
    assert_eq!(site.counter().await, 0);
    std::fs::remove_file(site.provider.join(workload::archive_name(1))).unwrap();

    // The same path works for what a replica needs: a row and a DDL statement.
    let rows = format!(
        "1\t1\t2\t4\ts1\tt2\tI\t0\t{{k,via-copy,v,7}}\n{}",
        ddl_row("COMMENT ON TABLE s1.t2 IS 'benign'", 5)
    );
    copy_rows(&role, &rows)
        .await
        .expect("a row and a DDL as the apply role");
    let v: i32 = su
        .query_one("SELECT v FROM s1.t2 WHERE k = 'via-copy'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
}

/// An unprivileged user with CREATE on a schema in the applier's search_path (public on
/// PostgreSQL 14 and earlier) plants `public.array_upper(text[], integer)`, which beats
/// the catalog's polymorphic one for an unqualified call. The function as replicas had it
/// before the pin calls it, as the superuser applier; `init --apply-role` re-creates the
/// functions pinned, and the archives then apply without calling it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_public_function_reaches_only_the_unpinned_log_apply() {
    let site = Site::start(
        "priv-hijack",
        Options {
            archives: 6,
            ..Options::default()
        },
    )
    .await;
    let su = site.pg.connect("replica").await;
    su.batch_execute(
        "CREATE ROLE intruder LOGIN;
         GRANT CREATE ON SCHEMA public TO intruder;",
    )
    .await
    .unwrap();
    let intruder = site.pg.connect_as("replica", "intruder", None).await;
    intruder
        .batch_execute(
            "CREATE TABLE public.hijacked (who text, via text);
             GRANT INSERT, SELECT ON public.hijacked TO PUBLIC;
             CREATE FUNCTION public.array_upper(a text[], d integer) RETURNS integer
             LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.hijacked VALUES (current_user, 'array_upper');
                 RETURN pg_catalog.array_upper(a, d);
             END $$;",
        )
        .await
        .unwrap();
    let hijacks = || async {
        let rows = site
            .pg
            .connect("replica")
            .await
            .query("SELECT who FROM public.hijacked", &[])
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect::<Vec<String>>()
    };

    // log_apply() as replicas had it before the pin: no SET clause, array_upper
    // unqualified (also what Slony's own slony1_dump.sh creates).
    let pinned: String = su
        .query_one(
            "SELECT prosrc FROM pg_proc WHERE oid = '\"_lab\".log_apply()'::regprocedure",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let old = pinned.replace("pg_catalog.array_upper(", "array_upper(");
    assert_ne!(old, pinned);
    su.batch_execute(&format!(
        "CREATE OR REPLACE FUNCTION \"_lab\".log_apply() RETURNS trigger LANGUAGE plpgsql
         AS $old${old}$old$"
    ))
    .await
    .unwrap();
    site.publish(1, 3);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = hijacks().await;
    assert!(
        !seen.is_empty() && seen.iter().all(|w| w == "postgres"),
        "the planted function ran as the superuser applier: {seen:?}"
    );

    // init --apply-role re-creates the functions with the pin.
    let dba = split_configs(&site);
    let run = apply_role(&dba, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let config: Option<Vec<String>> = su
        .query_one(
            "SELECT proconfig FROM pg_proc WHERE oid = '\"_lab\".log_apply()'::regprocedure",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        config,
        Some(vec!["search_path=pg_catalog, pg_temp".to_string()])
    );
    su.batch_execute("TRUNCATE public.hijacked").await.unwrap();

    // The same applier (the superuser) applies the rest: the planted function is not called.
    std::fs::copy(&dba, &site.config).unwrap();
    site.publish(4, 6);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 6);
    assert_eq!(hijacks().await, Vec::<String>::new());
    assert_eq!(
        site.replica_fingerprint().await,
        site.expected_fingerprint(6).await
    );
}

/// A superuser applier is warned once per run; the apply role is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superuser_applier_is_warned_once_the_apply_role_not() {
    let site = Site::start(
        "priv-warn",
        Options {
            archives: 4,
            ..Options::default()
        },
    )
    .await;
    site.publish(1, 2);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stderr.matches(SUPERUSER_WARNING).count(),
        1,
        "{}",
        run.stderr
    );
    assert!(run
        .stderr
        .contains("see `slony-receiver init --apply-role`"));

    let dba = split_configs(&site);
    let run = apply_role(&dba, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    site.publish(3, 4);
    let run = site.pull();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(site.counter().await, 4);
    assert!(!run.stderr.contains(SUPERUSER_WARNING), "{}", run.stderr);
}
