/*!
Self-tests of the real-process fixtures in `support/`.

If one of these fails, every end-to-end test using that fixture would fail for
the same reason; these tests say which part of the machine is missing or
misconfigured (PostgreSQL, sshd, aiosmtpd) before the product is involved.
*/

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ssh2::{CheckResult, KnownHostFileKind, Session};

use crate::support::pg::PgServer;
use crate::support::smtp::SmtpSink;
use crate::support::ssh::SshServer;
use crate::support::{free_port, TestDir};

#[tokio::test]
async fn pg_server_starts_answers_and_restarts() {
    let mut pg = PgServer::start();
    pg.create_db("selftest").await;
    let client = pg.connect("selftest").await;
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (42);")
        .await
        .expect("creating a table");
    let x: i32 = client
        .query_one("SELECT x FROM t", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(x, 42);
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .expect("select")
        .get(0);
    assert_eq!(user, "postgres");
    drop(client);

    pg.stop();
    assert!(!pg.is_running());
    let refused = tokio_postgres::connect(&pg.conninfo("selftest"), tokio_postgres::NoTls).await;
    assert!(refused.is_err(), "a stopped server must refuse connections");

    pg.start_again();
    let client = pg.connect("selftest").await;
    let x: i32 = client
        .query_one("SELECT x FROM t", &[])
        .await
        .expect("select after restart")
        .get(0);
    assert_eq!(x, 42, "data survives a restart");
    assert!(pg.log().contains("ready to accept connections"));
}

#[test]
fn ssh_server_checks_host_keys_and_serves_sftp_and_exec() {
    let root = TestDir::new("ssh-root");
    let site = root.mkdir("site2");
    std::fs::write(
        site.join("slony1_log_2_00000000000000000001.sql"),
        "-- archive\n",
    )
    .unwrap();
    let ssh = SshServer::start(root.path());

    let tcp = TcpStream::connect(("127.0.0.1", ssh.port())).expect("connecting to sshd");
    let mut session = Session::new().unwrap();
    session.set_tcp_stream(tcp);
    session.set_timeout(10_000);
    session.handshake().expect("SSH handshake");

    let (host_key, _) = session.host_key().expect("server host key");
    let host_key = host_key.to_vec();
    let mut known = session.known_hosts().unwrap();
    known
        .read_file(ssh.known_hosts(), KnownHostFileKind::OpenSSH)
        .expect("reading known_hosts");
    assert!(matches!(
        known.check_port("127.0.0.1", ssh.port(), &host_key),
        CheckResult::Match
    ));
    let mut wrong = session.known_hosts().unwrap();
    wrong
        .read_file(&ssh.wrong_known_hosts(), KnownHostFileKind::OpenSSH)
        .expect("reading wrong_known_hosts");
    assert!(matches!(
        wrong.check_port("127.0.0.1", ssh.port(), &host_key),
        CheckResult::Mismatch
    ));

    session
        .userauth_pubkey_file(ssh.user(), None, ssh.client_key(), None)
        .unwrap_or_else(|e| {
            panic!(
                "public key login as {}: {e}\nsshd log:\n{}",
                ssh.user(),
                ssh.log()
            )
        });
    assert!(session.authenticated());

    let sftp = session.sftp().expect("SFTP subsystem");
    let names: Vec<String> = sftp
        .readdir(&site)
        .expect("listing the served directory")
        .into_iter()
        .filter_map(|(path, _)| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        names,
        vec!["slony1_log_2_00000000000000000001.sql".to_string()]
    );
    drop(sftp);

    let mut channel = session.channel_session().unwrap();
    channel
        .exec("echo hello from $(id -un)")
        .expect("exec channel");
    let mut out = String::new();
    channel.read_to_string(&mut out).unwrap();
    channel.wait_close().unwrap();
    assert_eq!(out, format!("hello from {}\n", ssh.user()));
    assert!(
        ssh.log().contains("Accepted publickey"),
        "sshd log:\n{}",
        ssh.log()
    );

    // Cutting the connections ends this session but not the server.
    assert!(ssh.kill_connections() >= 1);
    let mut channel = session.channel_session();
    let cut = match channel.as_mut() {
        Ok(channel) => {
            channel.exec("true").is_err()
                || channel.wait_close().is_err()
                || channel.exit_status().is_err()
        }
        Err(_) => true,
    };
    assert!(cut, "the session should be gone after kill_connections()");
    let again = TcpStream::connect(("127.0.0.1", ssh.port())).expect("sshd still listening");
    let mut session = Session::new().unwrap();
    session.set_tcp_stream(again);
    session.set_timeout(10_000);
    session
        .handshake()
        .expect("new handshake after kill_connections()");
}

#[test]
fn smtp_sink_captures_a_mail() {
    let sink = SmtpSink::start();
    assert!(sink.messages().is_empty());

    let stream =
        TcpStream::connect(("127.0.0.1", sink.port())).expect("connecting to the SMTP sink");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reading an SMTP reply");
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        // "250-..." continues a multi-line reply; "250 ..." ends it.
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    let mut send = |line: &str| writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();

    expect("220");
    send("EHLO selftest");
    expect("250");
    send("AUTH PLAIN AGFsZXJ0cwBzM2NyZXQ="); // "\0alerts\0s3cret"
    expect("235");
    send("MAIL FROM:<slony@example.org>");
    expect("250");
    send("RCPT TO:<ops@example.org>");
    expect("250");
    send("RCPT TO:<dba@example.org>");
    expect("250");
    send("DATA");
    expect("354");
    send(
        "From: slony@example.org\r\nTo: ops@example.org\r\n\
         Subject: =?utf-8?q?[slony]_pull_failed_on_n=C3=B6de?=\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         counter gap after 41=\r\n, expected 42\r\n..leading dot\r\n.",
    );
    expect("250");
    send("QUIT");
    expect("221");

    let mails = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails.len(), 1);
    let mail = &mails[0];
    assert_eq!(mail.from, "slony@example.org");
    assert_eq!(
        mail.to,
        vec!["ops@example.org".to_string(), "dba@example.org".to_string()]
    );
    assert_eq!(mail.subject, "[slony] pull failed on nöde");
    assert_eq!(
        mail.body,
        "counter gap after 41, expected 42\n.leading dot\n"
    );
    assert_eq!(mail.header("to"), Some("ops@example.org"));
    assert_eq!(mail.auth_login.as_deref(), Some("alerts"));
    assert_eq!(mail.auth_password.as_deref(), Some("s3cret"));
}

#[test]
fn free_ports_are_bindable() {
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("a free port can be bound");
}
