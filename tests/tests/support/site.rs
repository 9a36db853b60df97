/*!
A subscriber site and its provider, all on loopback, for the tests that run
`slony-receiver` against real servers.

A [`Site`] is one test's whole world: a [`TestDir`]; the provider's directory for
the site (`<dir>/provider/site_logs/<node>`), served by a real sshd; a private
PostgreSQL whose `replica` database holds the workload's tables and the log-shipping
tracking schema at counter 0; optionally an SMTP sink the receiver's alerts go to;
a generated stream of changes to publish as archives; and the receiver's config
pointing at all of them. [`Options`] says how a test's site differs from the plain
one (stream, alerts, extra config, archive formats).
*/

use super::pg::PgServer;
use super::receiver::{database_toml, receiver_toml_with_database, run_receiver, Endpoints, Run};
use super::smtp::{Mail, SmtpSink};
use super::ssh::SshServer;
use super::workload::{self, Change, Format};
use super::TestDir;
use slony_shared::archive::{ArchiveName, BatchName};
use slony_shared::counter::Counter;
use slony_shared::ident::ClusterName;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::Mutex;

/// The Slony cluster of every site.
pub const CLUSTER: &str = "lab";
/// The site's name (its directory on the provider and under the local log directory).
pub const NODE: &str = "site1";
/// How long [`Site::mails`] waits for the mails it expects.
const MAIL_TIMEOUT: Duration = Duration::from_secs(15);

/// How a test's [`Site`] differs from the plain one.
pub struct Options {
    /// Archives in the generated stream of changes.
    pub archives: u64,
    /// Seed of the generated stream.
    pub seed: u64,
    /// Whether to start an SMTP sink and send the receiver's alerts to it.
    pub mail: bool,
    /// TOML appended to every config the site writes (more sections).
    pub extra: String,
    /// The format [`Site::publish`] writes archive `c` in.
    pub format: fn(u64) -> Format,
}

impl Default for Options {
    /// No archives, seed 11, no mail, no extra config, every archive in COPY format.
    fn default() -> Options {
        Options {
            archives: 0,
            seed: 11,
            mail: false,
            extra: String::new(),
            format: |_| Format::Copy22,
        }
    }
}

/// What [`Site::write_config`] changes from the site's own config.
#[derive(Default)]
pub struct ConfigChange<'a> {
    /// Another port to reach the provider on (an unreachable one).
    pub ssh_port: Option<u16>,
    /// Another port for the replica database (an unreachable one).
    pub pg_port: Option<u16>,
    /// Another known_hosts to check the provider against.
    pub known_hosts: Option<&'a Path>,
    /// TOML appended after the site's own extra.
    pub extra: &'a str,
    /// The keys of the `[database]` section instead of the site's own (another user, a
    /// URL).
    pub database: Option<&'a str>,
}

/// A subscriber site and its provider. Fields drop in order: the servers stop before
/// the directory goes.
pub struct Site {
    /// The provider's directory for this site.
    pub provider: PathBuf,
    /// The receiver's config file.
    pub config: PathBuf,
    /// The stream of changes the archives carry.
    pub stream: Vec<Vec<Change>>,
    /// The provider's sshd, serving `<dir>/provider`.
    pub ssh: SshServer,
    /// The PostgreSQL of the `replica` database (and of `expected`, once needed).
    pub pg: PgServer,
    /// The archive the `expected` database is at; `None` until it is created.
    expected_at: Mutex<Option<u64>>,
    /// The sink of the receiver's alerts, if [`Options::mail`].
    smtp: Option<SmtpSink>,
    /// [`Options::extra`].
    extra: String,
    /// [`Options::format`].
    format: fn(u64) -> Format,
    /// Root of everything this test writes (kept on failure).
    pub dir: TestDir,
}

impl Site {
    /// Starts a site in a new test directory named after `name`.
    pub async fn start(name: &str, options: Options) -> Site {
        Site::start_in(TestDir::new(name), options).await
    }

    /// Starts a site in `dir`, which may hold something already (a file system mounted
    /// on `local`).
    pub async fn start_in(dir: TestDir, options: Options) -> Site {
        let provider = dir.mkdir("provider/site_logs").join(NODE);
        std::fs::create_dir_all(&provider).unwrap();
        // The site's exchange directory (its acknowledgement goes there), as
        // `remote.trigger_dir` of the receiver's config says.
        std::fs::create_dir_all(dir.join("provider/site_logs.exchange").join(NODE)).unwrap();
        let pg = PgServer::start();
        pg.create_db("replica").await;
        pg.connect("replica")
            .await
            .batch_execute(&format!("{}{}", workload::SCHEMA_SQL, tracking_sql()))
            .await
            .unwrap();
        let ssh = SshServer::start(&dir.join("provider"));
        let smtp = options.mail.then(SmtpSink::start);
        let site = Site {
            provider,
            config: dir.join("receiver.toml"),
            stream: workload::generate(options.archives, options.seed),
            ssh,
            pg,
            expected_at: Mutex::new(None),
            smtp,
            extra: options.extra,
            format: options.format,
            dir,
        };
        site.write_config(ConfigChange::default());
        site
    }

    /// Writes the receiver's config: the site's own, changed as `change` says.
    pub fn write_config(&self, change: ConfigChange<'_>) {
        let mut extra = match &self.smtp {
            Some(smtp) => format!(
                "[alert]\nrecipients = [\"ops@example.org\"]\nfrom = \"receiver@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls = \"none\"\n",
                smtp.port()
            ),
            None => String::new(),
        };
        extra.push_str(&self.extra);
        extra.push_str(change.extra);
        let endpoints = Endpoints {
            cluster: CLUSTER,
            node: NODE,
            ssh: &self.ssh,
            ssh_port: change.ssh_port.unwrap_or(self.ssh.port()),
            known_hosts: change.known_hosts.unwrap_or(self.ssh.known_hosts()),
            remote_log_dir: self.provider.parent().unwrap(),
            local_dir: &self.local(),
            pg_port: change.pg_port.unwrap_or(self.pg.port()),
            dbname: "replica",
            slony_node_id: None,
        };
        let database = match change.database {
            Some(d) => d.to_string(),
            None => database_toml(endpoints.pg_port, "postgres", endpoints.dbname),
        };
        std::fs::write(
            &self.config,
            receiver_toml_with_database(&endpoints, &database, &extra),
        )
        .unwrap();
    }

    /// The site's exchange directory on the provider (its acknowledgement).
    pub fn exchange(&self) -> PathBuf {
        self.dir.join("provider/site_logs.exchange").join(NODE)
    }

    /// The receiver's local log directory.
    pub fn local(&self) -> PathBuf {
        self.dir.join("local")
    }

    /// The site's directory under the local log directory.
    pub fn site_dir(&self) -> PathBuf {
        self.local().join(NODE)
    }

    /// Where downloaded archives wait to be applied.
    pub fn incoming(&self) -> PathBuf {
        self.site_dir().join("incoming")
    }

    /// The file whose presence pauses the receiver.
    pub fn die_file(&self) -> PathBuf {
        self.local().join(format!("get_slony_logs.{NODE}.die"))
    }

    /// The run lock a pull (or promote, or housekeeping) holds.
    pub fn lock_file(&self) -> PathBuf {
        self.local().join(format!("slony-receiver.{CLUSTER}.lock"))
    }

    /// Writes archives `from..=to` as single files on the provider, each in the site's
    /// format.
    pub fn publish(&self, from: u64, to: u64) -> Vec<PathBuf> {
        workload::write_archives(&self.provider, CLUSTER, &self.stream, from, to, self.format)
    }

    /// Writes archives `from..=to` as single files on the provider, all in `format`.
    pub fn publish_as(&self, from: u64, to: u64, format: Format) -> Vec<PathBuf> {
        workload::write_archives(&self.provider, CLUSTER, &self.stream, from, to, |_| format)
    }

    /// Packs archives `from..=to` into a batch on the provider (no loose files) and
    /// returns its path.
    pub fn publish_batch(&self, from: u64, to: u64, format: Format) -> PathBuf {
        let staging = self.dir.join(format!("staging-{from}-{to}"));
        let paths = workload::write_archives(&staging, CLUSTER, &self.stream, from, to, |_| format);
        let members: Vec<(ArchiveName, PathBuf)> = paths
            .into_iter()
            .map(|p| (archive_name_of(&p), p))
            .collect();
        let batch = BatchName::new(Counter(from), Counter(to));
        slony_shared::batch::write_batch(&self.provider, batch, &members).unwrap();
        self.provider.join(batch.to_string())
    }

    /// Runs `slony-receiver pull --once`.
    pub fn pull(&self) -> Run {
        self.run(&["pull", "--once"])
    }

    /// Runs `slony-receiver <args[0]> --config <config> <args[1..]>`.
    pub fn run(&self, args: &[&str]) -> Run {
        run_receiver(&self.config, args[0], &args[1..])
    }

    /// The replica's counter in its tracking table.
    pub async fn counter(&self) -> u64 {
        let row = self
            .pg
            .connect("replica")
            .await
            .query_one(
                &format!("SELECT at_counter FROM \"_{CLUSTER}\".sl_archive_tracking"),
                &[],
            )
            .await
            .unwrap();
        row.get::<_, i64>(0) as u64
    }

    /// The counter in the site's `slony_counter.txt`, if it exists and holds a number.
    pub fn counter_file(&self) -> Option<u64> {
        std::fs::read_to_string(self.site_dir().join("slony_counter.txt"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The fingerprint of the replica's tables and sequences.
    pub async fn replica_fingerprint(&self) -> String {
        workload::fingerprint(&self.pg.connect("replica").await).await
    }

    /// The fingerprint of the provider's tables after archive `upto`, from the `expected`
    /// database (which only moves forward).
    pub async fn expected_fingerprint(&self, upto: u64) -> String {
        let mut expected_at = self.expected_at.lock().await;
        let from = match *expected_at {
            Some(at) => at,
            None => {
                self.pg.create_db("expected").await;
                self.pg
                    .connect("expected")
                    .await
                    .batch_execute(workload::SCHEMA_SQL)
                    .await
                    .unwrap();
                0
            }
        };
        assert!(upto >= from, "the replica went back from {from} to {upto}");
        let c = self.pg.connect("expected").await;
        workload::apply_expected(&c, &self.stream[from as usize..], upto - from).await;
        *expected_at = Some(upto);
        workload::fingerprint(&c).await
    }

    /// The SMTP sink of the receiver's alerts (panics unless [`Options::mail`]).
    pub fn smtp(&self) -> &SmtpSink {
        self.smtp
            .as_ref()
            .expect("this site was started without mail")
    }

    /// The first `n` (or more) mails the receiver sent, waiting for them (bounded).
    pub fn mails(&self, n: usize) -> Vec<Mail> {
        self.smtp().wait_for(n, MAIL_TIMEOUT)
    }
}

/// The SQL that creates [`CLUSTER`]'s log-shipping tracking schema, at counter 0.
pub fn tracking_sql() -> String {
    let cluster = ClusterName::new(CLUSTER).unwrap();
    format!(
        "{}{}",
        slony_shared::offline::tracking_schema_sql(&cluster),
        slony_shared::offline::tracking_row_sql(&cluster, Counter(0), "1970-01-01 00:00:00")
    )
}

/// The archive name of the file at `p`.
pub fn archive_name_of(p: &Path) -> ArchiveName {
    ArchiveName::parse(p.file_name().unwrap().to_str().unwrap()).unwrap()
}

/// The names of the files in `dir`, sorted (none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
