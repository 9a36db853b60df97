//! `slony-manager import-legacy` end to end: the provider of `tests/fixtures/legacy`
//! (the original tools' `repserver.cfg`, parser configuration and `.lst` files), a real
//! PostgreSQL holding the provider database with a Slony catalog, and site directories
//! holding loose archives and original-style `slony_logs_<a>-<b>.tar.gz` batches. The
//! plan, its inconsistencies, the import, the written configuration loaded by `status`,
//! `check` and `cut`; and hostile input refused with nothing written.

use crate::support::legacy;
use crate::support::pg::PgServer;
use crate::support::{
    bin_path, current_user, slony_set_sequences_sql, slony_set_sql, workload, TestDir,
};
use std::path::{Path, PathBuf};
use std::process::Command;

const CLUSTER: &str = "jsoc";

/// The provider database: the workload's tables, `s1.seq1` owned by `s1.t1` (so the
/// sites of `s1.t1` replicate it), a table in no set, and the cluster's catalog.
fn provider_sql() -> String {
    format!(
        "CREATE SCHEMA \"_{CLUSTER}\";\n\
         CREATE TABLE \"_{CLUSTER}\".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);\n\
         INSERT INTO \"_{CLUSTER}\".sl_archive_counter VALUES (8, '2026-11-21 10:00:08+00');\n\
         {}\n\
         ALTER SEQUENCE s1.seq1 OWNED BY s1.t1.id;\n\
         CREATE TABLE s1.secret (k text PRIMARY KEY);\n\
         CREATE TABLE s1.victim (k int);\n\
         {}{}",
        workload::SCHEMA_SQL,
        slony_set_sql(CLUSTER, &["s1.t1", "s1.t2"]),
        slony_set_sequences_sql(CLUSTER, &["s1.seq1"])
    )
}

/// One test's provider host: the fixture's tree with its placeholders filled in.
struct Legacy {
    dir: TestDir,
    pg: PgServer,
    /// `provider/etc/repserver.cfg`.
    cfg: PathBuf,
    /// `provider/site_logs`: the original `subscribers_dir`, each site's archives.
    site_logs: PathBuf,
    /// `provider/etc`: `tables_dir` and the parser configuration.
    etc: PathBuf,
    /// The manager's state directory the import fills (absent until then).
    state: PathBuf,
    /// The configuration the import writes (absent until then).
    config: PathBuf,
}

/// Archive `counter` as the original parser left it in a site directory.
fn archive(counter: u64) -> String {
    let stream = workload::generate(counter, 7);
    legacy::original_copy(CLUSTER, counter, &stream[(counter - 1) as usize])
}

/// Writes loose archives `counters` into `dir`.
fn write_loose(dir: &Path, counters: impl IntoIterator<Item = u64>) {
    std::fs::create_dir_all(dir).unwrap();
    for c in counters {
        std::fs::write(dir.join(workload::archive_name(c)), archive(c)).unwrap();
    }
}

/// Writes `slony_logs_<from>-<to>.tar.gz` into `dir` as `manage_logs.pl` made them: the
/// archives by their bare names, gzip-compressed.
fn write_batch(dir: &Path, from: u64, to: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let file = std::fs::File::create(dir.join(format!("slony_logs_{from}-{to}.tar.gz"))).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for c in from..=to {
        let body = archive(c);
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o640);
        header.set_mtime(1_700_000_000 + c);
        header.set_cksum();
        tar.append_data(&mut header, workload::archive_name(c), body.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap();
}

/// Every inconsistency of the fixture as the main test sets it up.
const ACKNOWLEDGED: [&str; 4] = [
    "gap/beta",
    "not-in-set/gamma/s1.secret",
    "parsed-files",
    "shared-account",
];

/// `--acknowledge ID` for each of `ids`.
fn acknowledging<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    ids.iter().flat_map(|id| ["--acknowledge", id]).collect()
}

impl Legacy {
    async fn new(name: &str) -> Legacy {
        let dir = TestDir::new(name);
        let pg = PgServer::start();
        pg.create_db("provider").await;
        pg.connect("provider")
            .await
            .batch_execute(&provider_sql())
            .await
            .unwrap();
        // The sites' half comes along; nothing here reads it.
        legacy::copy_fixture(
            dir.path(),
            &legacy::Placeholders {
                pg_port: pg.port(),
                ssh_port: 22,
                account_of: &|node| node.to_string(),
            },
        );
        dir.mkdir("provider/triggers");
        // slon's directory: what the parser cut, renamed as it renamed it.
        let slon_logs = dir.mkdir("provider/slon_logs");
        for c in 1..=8 {
            let name = format!("{}.parsed", workload::archive_name(c));
            std::fs::write(slon_logs.join(name), archive(c)).unwrap();
        }
        let site_logs = dir.mkdir("provider/site_logs");
        // alpha: a batch and the loose archives after it; beta: the same with 7
        // missing; gamma: loose archives only. The parser last wrote counter 8.
        write_batch(&site_logs.join("alpha"), 1, 5);
        write_loose(&site_logs.join("alpha"), 6..=8);
        write_batch(&site_logs.join("beta"), 1, 5);
        write_loose(&site_logs.join("beta"), [6, 8]);
        write_loose(&site_logs.join("gamma"), 1..=8);
        Legacy {
            cfg: dir.join("provider/etc/repserver.cfg"),
            etc: dir.join("provider/etc"),
            state: dir.join("manager/subscribers"),
            config: dir.join("manager/manager.toml"),
            site_logs,
            pg,
            dir,
        }
    }

    /// `slony-manager import-legacy` with the test's paths, every site under the test's
    /// own account, and `extra` arguments: exit code, stdout, stderr.
    fn import(&self, extra: &[&str]) -> (i32, String, String) {
        std::fs::create_dir_all(self.dir.join("manager")).unwrap();
        let me = current_user().name;
        let mut cmd = Command::new(bin_path("slony-manager"));
        cmd.arg("import-legacy")
            .arg("--legacy-config")
            .arg(&self.cfg)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--write-config")
            .arg(&self.config);
        for node in ["alpha", "beta", "gamma"] {
            cmd.arg("--account").arg(format!("{node}={me}"));
        }
        run(cmd.args(extra))
    }

    /// `slony-manager <command> --config <written config> [args]`.
    fn manager(&self, command: &str, args: &[&str]) -> (i32, String, String) {
        let mut cmd = Command::new(bin_path("slony-manager"));
        cmd.arg(command)
            .arg("--config")
            .arg(&self.config)
            .args(args);
        run(&mut cmd)
    }

    /// Neither the state directory nor the configuration exists.
    fn assert_nothing_written(&self, what: &str) {
        assert!(
            !self.state.exists(),
            "{what}: {} was made",
            self.state.display()
        );
        assert!(
            !self.config.exists(),
            "{what}: {} was written",
            self.config.display()
        );
    }

    fn state_file(&self, node: &str, file: &str) -> String {
        let p = self.state.join(node).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
    }
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("running slony-manager");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The plan's block for `node`: its own line and the indented lines under it.
fn site_block(plan: &str, node: &str) -> String {
    let start = plan
        .find(&format!("\n  {node}\n"))
        .unwrap_or_else(|| panic!("no site {node} in the plan:\n{plan}"));
    plan[start + 1..]
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("    "))
        .map(|(_, l)| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_its_inconsistencies_the_import_and_the_written_config() {
    let l = Legacy::new("legacy-import").await;
    // gamma's list names a table of the provider that no Slony set holds.
    let gamma_lst = l.etc.join("gamma.lst");
    let mut text = std::fs::read_to_string(&gamma_lst).unwrap();
    text.push_str("s1.secret\n");
    std::fs::write(&gamma_lst, text).unwrap();

    let (code, plan, err) = l.import(&["--dry-run"]);
    eprintln!("=== the plan ===\n{plan}");
    assert_eq!(code, 0, "{err}");
    let alpha = site_block(&plan, "alpha");
    for needle in [
        "tables        s1.t1, s1.t2",
        "sequences     s1.seq1",
        "archives      3 loose, 1 batch, counters 1-8, contiguous",
        "next counter  9  (cut_counter 8)",
        "account       ",
        "(--account)",
    ] {
        assert!(alpha.contains(needle), "{needle:?} not in:\n{alpha}");
    }
    let beta = site_block(&plan, "beta");
    for needle in [
        "tables        s1.t1  (",
        "sequences     s1.seq1",
        "archives      2 loose, 1 batch, counters 1-8, missing 7",
        "next counter  9  (cut_counter 8)",
    ] {
        assert!(beta.contains(needle), "{needle:?} not in:\n{beta}");
    }
    let gamma = site_block(&plan, "gamma");
    for needle in [
        "tables        s1.t2, s1.secret",
        "sequences     (none)",
        "archives      8 loose, 0 batches, counters 1-8, contiguous",
        "next counter  9  (cut_counter 8)",
    ] {
        assert!(gamma.contains(needle), "{needle:?} not in:\n{gamma}");
    }
    for needle in [
        "cluster          jsoc  (CLUSTERNAME, line 16)",
        "Sites (3, from ",
        "none waiting; 8 renamed .sql.parsed (newest 8)",
        "Inconsistencies (4;",
        "  gap/beta\n",
        "  shared-account\n",
        "  parsed-files\n",
        "  not-in-set/gamma/s1.secret\n",
        "allow_shared_account = true",
        "Keys of ",
        "merge_rep_sets: MRSLogDir",
        "Dry run: nothing was written.",
    ] {
        assert!(plan.contains(needle), "{needle:?} not in:\n{plan}");
    }
    assert!(!plan.contains("would be refused"), "{plan}");
    l.assert_nothing_written("the dry run");

    // Not acknowledged: refused, each named.
    let (code, _, err) = l.import(&[]);
    assert_ne!(code, 0);
    assert!(err.contains("4 inconsistencies not acknowledged"), "{err}");
    assert!(err.contains("gap/beta: site beta"), "{err}");
    assert!(
        err.contains("not-in-set/gamma/s1.secret: site gamma"),
        "{err}"
    );
    l.assert_nothing_written("no acknowledgement");
    let (code, _, err) = l.import(&acknowledging(&[
        "gap/beta",
        "parsed-files",
        "shared-account",
    ]));
    assert_ne!(code, 0);
    assert!(err.contains("1 inconsistency not acknowledged"), "{err}");
    assert!(err.contains("not-in-set/gamma/s1.secret"), "{err}");
    assert!(!err.contains("gap/beta:"), "{err}");
    l.assert_nothing_written("one acknowledgement of two");
    let (code, _, err) = l.import(&acknowledging(
        &[&ACKNOWLEDGED[..], &["gap/alpha"]].concat(),
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("names no inconsistency") && err.contains("gap/alpha"),
        "{err}"
    );
    l.assert_nothing_written("an acknowledgement of nothing");

    let (code, out, err) = l.import(&acknowledging(&ACKNOWLEDGED));
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(out.contains("Imported 3 site(s)"), "{out}");
    assert_eq!(l.state_file("alpha", "tables"), "s1.t1\ns1.t2\n");
    assert_eq!(l.state_file("alpha", "sequences"), "s1.seq1\n");
    assert_eq!(l.state_file("beta", "tables"), "s1.t1\n");
    assert_eq!(l.state_file("beta", "sequences"), "s1.seq1\n");
    assert_eq!(l.state_file("gamma", "tables"), "s1.t2\ns1.secret\n");
    assert_eq!(l.state_file("gamma", "sequences"), "");
    for node in ["alpha", "beta", "gamma"] {
        assert_eq!(l.state_file(node, "cut_counter"), "8\n", "{node}");
    }
    let config = std::fs::read_to_string(&l.config).unwrap();
    eprintln!("=== the written config ===\n{config}");
    for needle in [
        "cluster = \"jsoc\"",
        &format!("site_log_dir = \"{}\"", l.site_logs.display()),
        &format!("subscribers_dir = \"{}\"", l.state.display()),
        "allow_shared_account = true",
        "[sites.alpha]",
        "[sites.gamma]",
        &format!("port = {}", l.pg.port()),
        "dbname = \"provider\"",
        "# From SLAVEDBNAME, line 21.\ndbname = \"provider\"",
    ] {
        assert!(config.contains(needle), "{needle:?} not in:\n{config}");
    }

    // The written config is the manager's.
    let (code, out, err) = l.manager("status", &["--json"]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["cluster"], CLUSTER);
    let sites = status["sites"].as_array().unwrap();
    let names: Vec<&str> = sites.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["alpha", "beta", "gamma"], "{out}");
    for s in sites {
        assert_eq!(s["cut_counter"], 8, "{out}");
        assert_eq!(s["newest_archive"], 8, "{out}");
    }
    let (code, out, err) = l.manager("check", &[]);
    eprintln!("=== check ===\n{out}{err}");
    assert_ne!(code, 2, "the written config does not load: {err}");
    assert!(out.contains("config: OK"), "{out}");
    assert!(out.contains("provider database: OK"), "{out}");

    // `cut` goes on exactly where the original parser stopped: archive 9 of slon's
    // directory is cut for every site, and nothing before it.
    let slon_logs = l.dir.join("provider/slon_logs");
    std::fs::write(
        slon_logs.join(workload::archive_name(9)),
        workload::render(
            CLUSTER,
            9,
            &workload::generate(9, 3)[8],
            workload::Format::Copy22,
        ),
    )
    .unwrap();
    let (code, out, err) = l.manager("cut", &[]);
    assert_eq!(code, 0, "{out}{err}");
    for node in ["alpha", "beta", "gamma"] {
        assert_eq!(l.state_file(node, "cut_counter"), "9\n", "{node}: {err}");
        assert!(
            l.site_logs
                .join(node)
                .join(workload::archive_name(9))
                .is_file(),
            "{node}: archive 9 not cut"
        );
    }
    assert!(
        !l.site_logs
            .join("beta")
            .join(workload::archive_name(7))
            .exists(),
        "the gap is not filled by anyone"
    );

    // A second import is refused: the configuration exists.
    let (code, _, err) = l.import(&acknowledging(&ACKNOWLEDGED));
    assert_ne!(code, 0);
    assert!(err.contains("never overwrites"), "{err}");
    // The dry run says so too, and changes nothing either.
    let (code, out, err) = l.import(&["--dry-run"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("The import would be refused: ") && out.contains("never overwrites"),
        "{out}"
    );
}

/// Runs the import, as a dry run and for real, and asserts that each was refused with
/// exit code `code_wanted` and every one of `needles` in its message, nothing written.
fn assert_refused(l: &Legacy, what: &str, code_wanted: i32, needles: &[&str]) {
    for args in [&["--dry-run"][..], &[][..]] {
        let (code, out, err) = l.import(args);
        assert_eq!(code, code_wanted, "{what} {args:?}: {out}\n{err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{what} {args:?}: {needle:?} not in {err}"
            );
        }
        assert!(err.contains("nothing was imported"), "{what}: {err}");
        l.assert_nothing_written(what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parser_line_pointing_outside_subscribers_dir_is_refused() {
    let l = Legacy::new("legacy-parser-outside").await;
    let parser = l.etc.join("slon_parser.cfg");
    let good = std::fs::read_to_string(&parser).unwrap();
    let etc = l.etc.display().to_string();
    let logs = l.site_logs.display().to_string();
    // The control: the fixture as it is imports (dry run).
    let (code, _, err) = l.import(&["--dry-run"]);
    assert_eq!(code, 0, "{err}");

    // Each hostile line has a twin of the same shape, its paths where they belong, that
    // the import takes as a site: what is refused is the place, not the line's form.
    let twin_accepted = |line: &str, node: &str| {
        std::fs::write(&parser, format!("{good}{line}\n")).unwrap();
        let (code, plan, err) = l.import(&["--dry-run"]);
        assert_eq!(code, 0, "{line}: {err}");
        site_block(&plan, node);
    };
    for node in ["etc", "x", "omega"] {
        std::fs::create_dir_all(l.site_logs.join(node)).unwrap();
        std::fs::write(l.etc.join(format!("{node}.lst")), "s1.t1\n").unwrap();
    }
    for (line, twin, node, needle) in [
        (
            format!("/etc\t{etc}/etc.lst"),
            format!("{logs}/etc\t{etc}/etc.lst"),
            "etc",
            "is not directly inside subscribers_dir",
        ),
        (
            format!("{logs}/../x\t{etc}/x.lst"),
            format!("{logs}/x\t{etc}/x.lst"),
            "x",
            "holds `..`",
        ),
        (
            format!("{logs}/omega\t/etc/passwd"),
            format!("{logs}/omega\t{etc}/omega.lst"),
            "omega",
            "is not directly inside tables_dir",
        ),
    ] {
        twin_accepted(&twin, node);
        std::fs::write(&parser, format!("{good}{line}\n")).unwrap();
        assert_refused(&l, &line, 2, &["slon_parser.cfg: line 4:", needle]);
    }

    // A site directory that is a link leaving subscribers_dir (its twin: a directory).
    std::fs::create_dir(l.site_logs.join("fine")).unwrap();
    std::fs::write(l.etc.join("fine.lst"), "s1.t1\n").unwrap();
    twin_accepted(&format!("{logs}/fine\t{etc}/fine.lst"), "fine");
    std::os::unix::fs::symlink("/etc", l.site_logs.join("evil")).unwrap();
    std::fs::write(l.etc.join("evil.lst"), "s1.t1\n").unwrap();
    std::fs::write(&parser, format!("{good}{logs}/evil\t{etc}/evil.lst\n")).unwrap();
    assert_refused(&l, "a link", 1, &["evil is a symbolic link"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_with_sql_in_a_name_is_refused() {
    let l = Legacy::new("legacy-lst-sql").await;
    let payload = "s1.t1; drop table s1.victim";
    let db = l.pg.connect("provider").await;
    // The payload is live: spliced into the SQL such a tool would run, it drops a table.
    let exists = |rows: tokio_postgres::Row| rows.get::<_, bool>(0);
    let q = "SELECT to_regclass('s1.victim') IS NOT NULL";
    assert!(exists(db.query_one(q, &[]).await.unwrap()));
    db.simple_query(&format!("SELECT 1 FROM {payload}"))
        .await
        .unwrap();
    assert!(
        !exists(db.query_one(q, &[]).await.unwrap()),
        "the payload did no damage: it proves nothing"
    );
    db.batch_execute("CREATE TABLE s1.victim (k int)")
        .await
        .unwrap();

    for lst in [payload, "s1.t1'--", "\"s1\".\"t1; drop table s1.victim\""] {
        std::fs::write(l.etc.join("alpha.lst"), format!("s1.t2\n{lst}\n")).unwrap();
        assert_refused(&l, lst, 2, &["alpha.lst: line 2:", "is not a table name"]);
        assert!(exists(db.query_one(q, &[]).await.unwrap()), "{lst}");
    }
}
