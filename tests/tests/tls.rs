//! TLS to PostgreSQL through the product (`slony-receiver init`, which connects to the
//! replica and nothing else, and `verify --reference`): a server with `ssl = on` and
//! certificates made for this run by a CA of its own (the `openssl` crate, the library
//! the product links), and libpq's sslmode semantics checked against it.
//!
//! The server's databases make TLS visible: `tlsonly` refuses any connection without
//! it (`hostnossl ... reject`), so a connection to it that succeeds was encrypted;
//! `certonly` demands a client certificate (`hostssl ... cert`).

use crate::support::bin_path;
use crate::support::pg::PgServer;
use crate::support::TestDir;
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its key.
struct Issued {
    cert: X509,
    key: PKey<Private>,
}

/// A fresh P-256 key (quicker to make than RSA; PostgreSQL and OpenSSL take it alike).
fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `cn`, valid for two days: a CA of its own when `issuer` is
/// `None`, else signed by `issuer` with the given subjectAltName DNS names (and
/// `server_auth` or client use).
fn issue(cn: &str, issuer: Option<&Issued>, dns: &[&str], server: bool) -> Issued {
    let key = new_key();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    // Serials must differ between the certificates one CA signs.
    let mut serial = BigNum::new().unwrap();
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |i| i.cert.subject_name()))
        .unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    match issuer {
        None => {
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
        Some(ca) => {
            b.append_extension(BasicConstraints::new().build().unwrap())
                .unwrap();
            b.append_extension(KeyUsage::new().digital_signature().build().unwrap())
                .unwrap();
            let mut usage = ExtendedKeyUsage::new();
            if server {
                usage.server_auth();
            } else {
                usage.client_auth();
            }
            b.append_extension(usage.build().unwrap()).unwrap();
            if !dns.is_empty() {
                let mut san = SubjectAlternativeName::new();
                for d in dns {
                    san.dns(d);
                }
                let san = san.build(&b.x509v3_context(Some(&ca.cert), None)).unwrap();
                b.append_extension(san).unwrap();
            }
        }
    }
    let signer = issuer.map_or(&key, |i| &i.key);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

/// A CA, a second CA that signed nothing of this server's, and the certificates the
/// first signed, as PEM files in `dir`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: PathBuf) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let ca = issue("slony test ca", None, &[], false);
        let other = issue("slony test other ca", None, &[], false);
        // The server's certificate names localhost only: not 127.0.0.1.
        let server = issue("localhost", Some(&ca), &["localhost"], true);
        // A client certificate for the database user postgres.
        let client = issue("postgres", Some(&ca), &[], false);
        pki.write("ca", &ca);
        pki.write("other-ca", &other);
        pki.write("server", &server);
        pki.write("client", &client);
        pki
    }

    /// `<name>.crt` and `<name>.key` (0600, as libpq and PostgreSQL want keys).
    fn write(&self, name: &str, issued: &Issued) {
        std::fs::write(
            self.path(&format!("{name}.crt")),
            issued.cert.to_pem().unwrap(),
        )
        .unwrap();
        let key = self.path(&format!("{name}.key"));
        std::fs::write(&key, issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// A PostgreSQL server with TLS on, the PKI that made its certificate, and a directory
/// for the product's configurations.
struct TlsServer {
    pg: PgServer,
    pki: Pki,
    dir: TestDir,
}

impl TlsServer {
    /// Starts a server, turns TLS on with `pki`'s server certificate, and makes database
    /// `tlsonly` refuse connections without TLS and `certonly` demand a client
    /// certificate.
    async fn start(name: &str) -> TlsServer {
        let dir = TestDir::new(name);
        let pki = Pki::new(dir.join("pki"));
        let pg = PgServer::start();
        for file in ["server.crt", "server.key", "ca.crt"] {
            let to = pg.data_dir().join(file);
            std::fs::copy(pki.path(file), &to).unwrap();
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).unwrap();
            // The server reads them as its own user, which must own the key (0600).
            if let Some((uid, gid)) = crate::support::user_by_name("postgres")
                .filter(|_| crate::support::is_root())
                .map(|u| (u.uid, u.gid))
            {
                std::os::unix::fs::chown(&to, Some(uid), Some(gid)).unwrap();
            }
        }
        let admin = pg.connect("postgres").await;
        for setting in [
            "ssl = on",
            "ssl_cert_file = 'server.crt'",
            "ssl_key_file = 'server.key'",
            "ssl_ca_file = 'ca.crt'",
        ] {
            admin
                .batch_execute(&format!("ALTER SYSTEM SET {setting}"))
                .await
                .unwrap();
        }
        pg.create_db("tlsonly").await;
        pg.create_db("certonly").await;
        // hba_first reloads the configuration, which turns ssl on as well.
        pg.hba_first(
            "hostssl certonly all 127.0.0.1/32 cert\n\
             hostnossl tlsonly all 127.0.0.1/32 reject\n\
             host certonly all 127.0.0.1/32 reject",
        )
        .await;
        TlsServer { pg, pki, dir }
    }

    /// `sslrootcert = "<pki>/<file>"`.
    fn root(&self, file: &str) -> String {
        format!("sslrootcert = \"{}\"", self.pki.path(file).display())
    }

    /// `[database]` keys for database `db` on this server, reached as `host`.
    fn keys(&self, host: &str, db: &str, tls: &str) -> String {
        keys(host, self.pg.port(), db, tls)
    }
}

/// `[database]` keys for user postgres.
fn keys(host: &str, port: u16, db: &str, tls: &str) -> String {
    format!("host = \"{host}\"\nport = {port}\nuser = \"postgres\"\ndbname = \"{db}\"\n{tls}\n")
}

/// Writes a receiver configuration `<name>.toml` in `dir` with `database` as its
/// `[database]` section; returns its path.
fn config(dir: &TestDir, name: &str, database: &str) -> PathBuf {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "cluster = \"lab\"\nnode = \"site1\"\n[remote]\nhost = \"127.0.0.1\"\nuser = \"nobody\"\n\
             key_file = \"{k}\"\nknown_hosts = \"{k}\"\nlog_dir = \"/srv/logs\"\n[local]\n\
             log_dir = \"{local}\"\n[database]\nconnect_timeout_secs = 10\n{database}",
            k = dir.join("unused").display(),
            local = dir.join(format!("local-{name}")).display(),
        ),
    )
    .unwrap();
    config
}

/// What a run of the product gave.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `slony-receiver <args> --config <config>`.
fn receiver(config: &Path, args: &[&str]) -> Run {
    let out = Command::new(bin_path("slony-receiver"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `slony-receiver init` with a `[database]` of `database` keys.
fn init(dir: &TestDir, name: &str, database: &str) -> Run {
    let run = receiver(&config(dir, name, database), &["init"]);
    // For the record (--nocapture): what an operator reads for each case.
    println!(
        "{name}: exit {}: {}",
        run.code,
        run.stderr.lines().last().unwrap_or("(nothing)")
    );
    run
}

/// Whether `init` got as far as the database: it made the schema, or found it there
/// from an earlier connection of this test.
fn connected(run: &Run) -> bool {
    run.code == 0 || run.stderr.contains("already exists in the replica")
}

/// Asserts that `run` did not get to the database, and that its error says each of `says`.
fn assert_refused(run: &Run, says: &[&str]) {
    assert!(!connected(run), "connected: {}", run.stderr);
    for s in says {
        assert!(run.stderr.contains(s), "wanted {s:?} in: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_the_right_ca_and_host_name_connects_over_tls() {
    let s = TlsServer::start("tls-full").await;
    // The check is live: without TLS, PostgreSQL itself refuses `tlsonly`.
    let run = init(
        &s.dir,
        "plain",
        &s.keys("127.0.0.1", "tlsonly", "sslmode = \"disable\""),
    );
    assert_refused(&run, &["pg_hba.conf rejects connection", "no encryption"]);

    // verify-full, the right CA, the name the certificate carries: connected, so over
    // TLS.
    let run = init(
        &s.dir,
        "full",
        &s.keys(
            "localhost",
            "tlsonly",
            &format!("sslmode = \"verify-full\"\n{}", s.root("ca.crt")),
        ),
    );
    assert!(connected(&run), "{}", run.stderr);
    // The same in a URL's query.
    let url = format!(
        "url = \"postgresql://postgres@localhost:{}/tlsonly?sslmode=verify-full&sslrootcert={}\"\n",
        s.pg.port(),
        s.pki.path("ca.crt").display()
    );
    let run = init(&s.dir, "url", &url);
    assert!(connected(&run), "{}", run.stderr);
    // prefer (the default) negotiates TLS where the server offers it; require
    // encrypts without checking the certificate (127.0.0.1 is not in it).
    let run = init(&s.dir, "prefer", &s.keys("127.0.0.1", "tlsonly", ""));
    assert!(connected(&run), "{}", run.stderr);
    let run = init(
        &s.dir,
        "require",
        &s.keys("127.0.0.1", "tlsonly", "sslmode = \"require\""),
    );
    assert!(connected(&run), "{}", run.stderr);

    // verify --reference takes sslmode in its connection string too.
    let replica = config(
        &s.dir,
        "replica",
        &s.keys(
            "localhost",
            "tlsonly",
            &format!("sslmode = \"verify-full\"\n{}", s.root("ca.crt")),
        ),
    );
    let reference = |host: &str| {
        format!(
            "host={host} port={} user=postgres dbname=tlsonly sslmode=verify-full sslrootcert={}",
            s.pg.port(),
            s.pki.path("ca.crt").display()
        )
    };
    let run = receiver(
        &replica,
        &["verify", "--reference", &reference("localhost")],
    );
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("against the reference localhost:"),
        "{}",
        run.stdout
    );
    let run = receiver(
        &replica,
        &["verify", "--reference", &reference("127.0.0.1")],
    );
    println!("verify: exit {}: {}", run.code, run.stderr.trim());
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("cannot connect to the reference database (127.0.0.1:")
            && run
                .stderr
                .contains("the server's certificate is for localhost, not 127.0.0.1"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_is_refused_naming_the_ca_file() {
    let s = TlsServer::start("tls-ca").await;
    for (name, mode) in [
        ("wrong-ca-full", "verify-full"),
        ("wrong-ca", "verify-ca"),
        // libpq's rule: require with a root certificate verifies it.
        ("wrong-ca-require", "require"),
    ] {
        let run = init(
            &s.dir,
            name,
            &s.keys(
                "localhost",
                "tlsonly",
                &format!("sslmode = \"{mode}\"\n{}", s.root("other-ca.crt")),
            ),
        );
        assert_refused(
            &run,
            &[
                "the server's certificate (CN=localhost, issued by CN=slony test ca) is not signed by the CA in",
                "other-ca.crt (sslmode=",
                "set sslrootcert to the CA certificate that signed it",
            ],
        );
        assert!(
            run.stderr.contains(&format!("(sslmode={mode}")),
            "{}",
            run.stderr
        );
    }
    // And with the right CA, require verifies and connects.
    let run = init(
        &s.dir,
        "right-ca-require",
        &s.keys(
            "localhost",
            "tlsonly",
            &format!("sslmode = \"require\"\n{}", s.root("ca.crt")),
        ),
    );
    assert!(connected(&run), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_refuses_a_host_the_certificate_does_not_name_and_verify_ca_accepts_it() {
    let s = TlsServer::start("tls-host").await;
    let run = init(
        &s.dir,
        "wrong-host",
        &s.keys(
            "127.0.0.1",
            "tlsonly",
            &format!("sslmode = \"verify-full\"\n{}", s.root("ca.crt")),
        ),
    );
    assert_refused(
        &run,
        &["the server's certificate is for localhost, not 127.0.0.1 (sslmode=verify-full): connect by a name the certificate lists"],
    );
    // verify-ca checks the signature only.
    let run = init(
        &s.dir,
        "verify-ca",
        &s.keys(
            "127.0.0.1",
            "tlsonly",
            &format!("sslmode = \"verify-ca\"\n{}", s.root("ca.crt")),
        ),
    );
    assert!(connected(&run), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back_to_plain() {
    let dir = TestDir::new("tls-off");
    let plain = PgServer::start();
    plain.create_db("replica").await;
    // verify-full's root certificate is never used: there is no TLS at all.
    let root = dir.join("unused-root.crt");
    std::fs::write(&root, issue("x", None, &[], false).cert.to_pem().unwrap()).unwrap();
    for (mode, tls) in [
        ("require", "sslmode = \"require\"".to_string()),
        (
            "verify-full",
            format!(
                "sslmode = \"verify-full\"\nsslrootcert = \"{}\"",
                root.display()
            ),
        ),
    ] {
        let run = init(
            &dir,
            mode,
            &keys("localhost", plain.port(), "replica", &tls),
        );
        assert_refused(
            &run,
            &[&format!(
                "the server does not support TLS, and sslmode={mode} demands it: turn on ssl in the server's postgresql.conf"
            )],
        );
    }
    let run = init(
        &dir,
        "prefer",
        &keys("127.0.0.1", plain.port(), "replica", "sslmode = \"prefer\""),
    );
    assert!(connected(&run), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_presented_where_the_server_demands_one() {
    let s = TlsServer::start("tls-client").await;
    let client = |key: &Path| {
        format!(
            "sslmode = \"verify-full\"\n{}\nsslcert = \"{}\"\nsslkey = \"{}\"",
            s.root("ca.crt"),
            s.pki.path("client.crt").display(),
            key.display()
        )
    };
    let run = init(
        &s.dir,
        "client-cert",
        &s.keys("localhost", "certonly", &client(&s.pki.path("client.key"))),
    );
    assert!(connected(&run), "{}", run.stderr);

    let run = init(
        &s.dir,
        "no-client-cert",
        &s.keys(
            "localhost",
            "certonly",
            &format!("sslmode = \"verify-full\"\n{}", s.root("ca.crt")),
        ),
    );
    assert_refused(&run, &["connection requires a valid client certificate"]);

    // A key others can read is refused when the configuration loads, as libpq does.
    let loose = s.pki.path("loose.key");
    std::fs::copy(s.pki.path("client.key"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = init(
        &s.dir,
        "loose-key",
        &s.keys("localhost", "certonly", &client(&loose)),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("key `database.sslkey`")
            && run.stderr.contains("has group or world access (mode 0644)"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_that_cannot_work_are_refused_when_the_configuration_loads() {
    let dir = TestDir::new("tls-config");
    // No server is needed: nothing is connected to.
    for (name, tls, says) in [
        (
            "bad-mode",
            "sslmode = \"verify_full\"",
            "key `database.sslmode`: sslmode \"verify_full\" is not one of disable, allow, prefer, require, verify-ca, verify-full",
        ),
        (
            "missing-root",
            "sslmode = \"verify-ca\"\nsslrootcert = \"/nonexistent/root.crt\"",
            "key `database.sslrootcert`: sslrootcert /nonexistent/root.crt: cannot be read",
        ),
        (
            "half-client",
            "sslcert = \"/etc/hostname\"",
            "key `database.sslcert`: sslcert and sslkey go together",
        ),
    ] {
        let run = init(&dir, name, &keys("localhost", 1, "replica", tls));
        assert_eq!(run.code, 2, "{}", run.stderr);
        assert!(run.stderr.contains(says), "{}", run.stderr);
    }
    // A libpq TLS key that is not read is named, not taken for a typo of the string.
    let run = init(
        &dir,
        "crl",
        "url = \"postgresql://postgres@localhost:1/replica?sslmode=verify-full&sslcrl=/etc/crl.pem\"\n",
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("key `database.url`: sslcrl is not supported"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_manager_refuses_tls_settings_that_cannot_work_when_its_configuration_loads() {
    let dir = TestDir::new("tls-manager");
    let config = dir.join("manager.toml");
    crate::support::manager::ManagerToml::under(dir.path(), "lab", 1, "provider")
        .database_key("sslmode", "\"verify-full\"")
        .database_key("sslrootcert", "\"/nonexistent/root.crt\"")
        .write(&config);
    let out = Command::new(bin_path("slony-manager"))
        .args(["status", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("manager: exit {:?}: {}", out.status.code(), err.trim());
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("database.sslrootcert")
            && err.contains("sslrootcert /nonexistent/root.crt: cannot be read"),
        "{err}"
    );
}
