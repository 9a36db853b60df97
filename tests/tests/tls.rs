//! TLS to PostgreSQL through the product (`slony-receiver init`, which connects to the
//! replica and nothing else): a server with `ssl = on` and certificates made for this
//! run by a CA of its own, and libpq's sslmode semantics checked against it.

use crate::support::bin_path;
use crate::support::pg::PgServer;
use crate::support::TestDir;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs the openssl tool (tests only; the product links OpenSSL, it never runs it).
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and certificates it signed, made for one run.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: PathBuf) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        for ca in ["ca", "other-ca"] {
            openssl(
                &pki.dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=slony test {ca}"),
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                ],
            );
        }
        // The server's certificate names localhost only: not 127.0.0.1.
        pki.sign(
            "server",
            "/CN=localhost",
            Some("subjectAltName=DNS:localhost"),
        );
        // A client certificate for the database user postgres.
        pki.sign("client", "/CN=postgres", None);
        pki
    }

    fn sign(&self, name: &str, subject: &str, ext: Option<&str>) {
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                subject,
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let ext_file = self.dir.join(format!("{name}.ext"));
        std::fs::write(&ext_file, ext.unwrap_or("basicConstraints=CA:FALSE")).unwrap();
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
        let key = self.path(&format!("{name}.key"));
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Turns TLS on in `pg` with `pki`'s server certificate, and makes database `tlsonly`
/// refuse connections without TLS and `certonly` demand a client certificate.
async fn enable_tls(pg: &PgServer, pki: &Pki) {
    for file in ["server.crt", "server.key", "ca.crt"] {
        let to = pg.data_dir().join(file);
        std::fs::copy(pki.path(file), &to).unwrap();
        std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
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
    pg.hba_first("hostssl certonly all 127.0.0.1/32 cert\nhostnossl tlsonly all 127.0.0.1/32 reject\nhost certonly all 127.0.0.1/32 reject")
        .await;
}

/// `slony-receiver init` with a `[database]` of `database` keys: exit code and stderr.
fn init(dir: &TestDir, name: &str, database: &str) -> (i32, String) {
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
    let out = Command::new(bin_path("slony-receiver"))
        .args(["init", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    // For the record (--nocapture): what an operator reads for each case.
    println!("{name}: {}", err.lines().last().unwrap_or("(nothing)"));
    (out.status.code().unwrap_or(-1), err)
}

/// Whether `init` got as far as the database: it made the schema, or found it there
/// from an earlier connection of this test.
fn connected((code, err): &(i32, String)) -> bool {
    *code == 0 || err.contains("already exists in the replica")
}

fn keys(host: &str, port: u16, db: &str, tls: &str) -> String {
    format!("host = \"{host}\"\nport = {port}\nuser = \"postgres\"\ndbname = \"{db}\"\n{tls}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_is_honoured_and_each_bad_server_is_refused_by_name() {
    let dir = TestDir::new("tls");
    let pki = Pki::new(dir.join("pki"));
    let pg = PgServer::start();
    enable_tls(&pg, &pki).await;
    let port = pg.port();
    let ca = pki.path("ca.crt");
    let other = pki.path("other-ca.crt");
    let root = |p: &Path| format!("sslrootcert = \"{}\"", p.display());

    // The payload is live: without TLS, PostgreSQL itself refuses `tlsonly`.
    let (code, err) = init(
        &dir,
        "plain",
        &keys("127.0.0.1", port, "tlsonly", "sslmode = \"disable\""),
    );
    assert_ne!(code, 0);
    assert!(err.contains("no encryption"), "{err}");

    // verify-full, the right CA, the name the certificate carries: connected, over TLS
    // (tlsonly refuses anything else).
    let run = init(
        &dir,
        "full",
        &keys(
            "localhost",
            port,
            "tlsonly",
            &format!("sslmode = \"verify-full\"\n{}", root(&ca)),
        ),
    );
    assert!(connected(&run), "{}", run.1);
    // prefer (the default) negotiates TLS where the server offers it.
    let run = init(&dir, "prefer", &keys("127.0.0.1", port, "tlsonly", ""));
    assert!(connected(&run), "{}", run.1);

    // A CA that did not sign the server's certificate.
    let (code, err) = init(
        &dir,
        "wrong-ca",
        &keys(
            "localhost",
            port,
            "tlsonly",
            &format!("sslmode = \"verify-full\"\n{}", root(&other)),
        ),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("the server's certificate is not signed by the CA in")
            && err.contains("other-ca.crt"),
        "{err}"
    );

    // A host name the certificate does not carry: refused by verify-full, accepted by
    // verify-ca (which checks the signature only).
    let (code, err) = init(
        &dir,
        "wrong-host",
        &keys(
            "127.0.0.1",
            port,
            "tlsonly",
            &format!("sslmode = \"verify-full\"\n{}", root(&ca)),
        ),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("the server's certificate does not name the host connected to"),
        "{err}"
    );
    let run = init(
        &dir,
        "verify-ca",
        &keys(
            "127.0.0.1",
            port,
            "tlsonly",
            &format!("sslmode = \"verify-ca\"\n{}", root(&ca)),
        ),
    );
    assert!(connected(&run), "{}", run.1);

    // A client certificate where the server demands one.
    let client = format!(
        "sslmode = \"verify-ca\"\n{}\nsslcert = \"{}\"\nsslkey = \"{}\"",
        root(&ca),
        pki.path("client.crt").display(),
        pki.path("client.key").display()
    );
    let run = init(
        &dir,
        "client-cert",
        &keys("127.0.0.1", port, "certonly", &client),
    );
    assert!(connected(&run), "{}", run.1);
    let (code, err) = init(
        &dir,
        "no-client-cert",
        &keys(
            "127.0.0.1",
            port,
            "certonly",
            &format!("sslmode = \"verify-ca\"\n{}", root(&ca)),
        ),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("connection requires a valid client certificate"),
        "{err}"
    );

    // A server without TLS under require: refused, saying so; prefer falls back.
    let plain = PgServer::start();
    plain.create_db("replica").await;
    let (code, err) = init(
        &dir,
        "require",
        &keys(
            "127.0.0.1",
            plain.port(),
            "replica",
            "sslmode = \"require\"",
        ),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("the server does not offer TLS, and sslmode=require demands it"),
        "{err}"
    );
    let run = init(
        &dir,
        "fallback",
        &keys("127.0.0.1", plain.port(), "replica", "sslmode = \"prefer\""),
    );
    assert!(connected(&run), "{}", run.1);

    // Settings that cannot work are refused when the file loads, naming the key.
    let (code, err) = init(
        &dir,
        "bad-mode",
        &keys("localhost", port, "tlsonly", "sslmode = \"verify_full\""),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("key `database.sslmode`") && err.contains("\"verify_full\""),
        "{err}"
    );
}
