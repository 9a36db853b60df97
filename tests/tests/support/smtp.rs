/*!
A real SMTP server that captures mail: [`SmtpSink`].

The sink runs Debian's `/usr/bin/python3` (the one that has the
`python3-aiosmtpd` package; a pyenv or venv `python3` earlier on `PATH`
usually does not) with a small aiosmtpd script written into the fixture's
directory. The server listens on a free 127.0.0.1 port, speaks plain SMTP
(no TLS), accepts any `AUTH PLAIN`/`AUTH LOGIN` credentials (and records
them), and appends every message as one JSON line to `messages.jsonl`.
[`SmtpSink::messages`] parses those lines into [`Mail`] values: envelope,
decoded subject and decoded body.
*/

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{free_port, port_accepts, tail, terminate_child, TestDir};

/// Debian's interpreter, where `python3-aiosmtpd` is installed.
const PYTHON: &str = "/usr/bin/python3";
/// How long the server may take to start listening.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many free ports `start()` tries when the chosen one turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// The server: `sink.py <messages.jsonl> <port>`.
const SCRIPT: &str = r#"
import json
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

out_path, port = sys.argv[1], int(sys.argv[2])


def text(value):
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def accept_any(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True, auth_data=auth_data)


class Sink:
    async def handle_DATA(self, server, session, envelope):
        auth = getattr(session, "auth_data", None)
        login = password = None
        if isinstance(auth, LoginPassword):
            login, password = text(auth.login), text(auth.password)
        record = {
            "from": text(envelope.mail_from),
            "to": [text(r) for r in envelope.rcpt_tos],
            "content": text(envelope.content),
            "auth_login": login,
            "auth_password": password,
        }
        with open(out_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return "250 OK: captured"


controller = Controller(
    Sink(),
    hostname="127.0.0.1",
    port=port,
    server_hostname="slony-e2e-smtp",
    authenticator=accept_any,
    auth_require_tls=False,
    enable_SMTPUTF8=True,
)
controller.start()
print("READY", flush=True)
threading.Event().wait()
"#;

/// One captured message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// Envelope sender (`MAIL FROM`).
    pub from: String,
    /// Envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The `Subject` header, unfolded and with RFC 2047 encoded words decoded.
    pub subject: String,
    /// The body with its `Content-Transfer-Encoding` (base64 or
    /// quoted-printable) undone and line endings normalised to `\n`. For a
    /// multipart message this is the raw MIME body.
    pub body: String,
    /// Header fields in order, unfolded, values as sent (not decoded).
    pub headers: Vec<(String, String)>,
    /// The message exactly as received in `DATA`.
    pub raw: String,
    /// Login given with `AUTH`, if the client authenticated.
    pub auth_login: Option<String>,
    /// Password given with `AUTH`, if the client authenticated.
    pub auth_password: Option<String>,
}

impl Mail {
    /// The first header called `name` (case-insensitive), undecoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running SMTP capture server on 127.0.0.1, killed on drop.
pub struct SmtpSink {
    /// The python process.
    child: Option<Child>,
    /// TCP port on 127.0.0.1.
    port: u16,
    /// One JSON object per received message.
    messages_path: PathBuf,
    /// The server's stdout and stderr.
    log_path: PathBuf,
    /// Owns script, messages and log; declared last so it goes after the process.
    dir: TestDir,
}

impl SmtpSink {
    /// Starts the server on a free loopback port and waits until it listens.
    ///
    /// # Panics
    ///
    /// If `/usr/bin/python3` or its `aiosmtpd` module is missing (the message
    /// names the Debian package `python3-aiosmtpd`), or if the server is not
    /// listening within 20 s.
    pub fn start() -> SmtpSink {
        if !Path::new(PYTHON).is_file() {
            panic!(
                "{PYTHON} not found; install the Debian packages `python3` and `python3-aiosmtpd`"
            );
        }
        let dir = TestDir::new("smtp");
        let script = dir.join("sink.py");
        std::fs::write(&script, SCRIPT).expect("writing the SMTP sink script");
        let messages_path = dir.join("messages.jsonl");
        let log_path = dir.join("smtp.log");

        for attempt in 1..=PORT_ATTEMPTS {
            let port = free_port();
            let log = std::fs::File::create(&log_path).expect("creating the SMTP sink log");
            let mut child = Command::new(PYTHON)
                .arg(&script)
                .arg(&messages_path)
                .arg(port.to_string())
                .current_dir(dir.path())
                .env("PYTHONUNBUFFERED", "1")
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("duplicating the log file handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("spawning {PYTHON}: {e}"));

            let deadline = Instant::now() + READY_TIMEOUT;
            let failure = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    break format!("exited with {status}");
                }
                let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log_text.contains("READY") && port_accepts(port, Duration::from_millis(200)) {
                    return SmtpSink {
                        child: Some(child),
                        port,
                        messages_path,
                        log_path,
                        dir,
                    };
                }
                if Instant::now() >= deadline {
                    terminate_child(&mut child, libc::SIGKILL, Duration::from_secs(2));
                    break format!("not listening after {READY_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log_text.contains("No module named 'aiosmtpd'") {
                panic!(
                    "{PYTHON} has no `aiosmtpd` module; install the Debian package `python3-aiosmtpd` \
                     (or run scripts/test.sh as root)"
                );
            }
            if (log_text.contains("Address already in use") || log_text.contains("Errno 98"))
                && attempt < PORT_ATTEMPTS
            {
                continue;
            }
            panic!(
                "SMTP sink on port {port} {failure}; log {}:\n{log_text}",
                log_path.display()
            );
        }
        unreachable!("the loop returns or panics")
    }

    /// The server's TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, in arrival order.
    ///
    /// # Panics
    ///
    /// If a recorded line is not the JSON the sink writes.
    pub fn messages(&self) -> Vec<Mail> {
        let bytes = std::fs::read(&self.messages_path).unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        // A line is complete once its newline is there; the last one may still
        // be being written.
        let complete = match text.rfind('\n') {
            Some(end) => &text[..end],
            None => "",
        };
        complete
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse_record)
            .collect()
    }

    /// Waits until at least `n` messages have arrived and returns all of them.
    /// Blocks the calling thread; see [`SmtpSink::wait_for_async`].
    ///
    /// # Panics
    ///
    /// If fewer than `n` arrived within `timeout` (the message lists those
    /// that did).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.messages();
            if mails.len() >= n {
                return mails;
            }
            if Instant::now() >= deadline {
                self.timed_out(n, timeout, &mails);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Async twin of [`SmtpSink::wait_for`], sleeping with tokio so the test's
    /// other tasks keep running.
    ///
    /// # Panics
    ///
    /// As [`SmtpSink::wait_for`].
    pub async fn wait_for_async(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.messages();
            if mails.len() >= n {
                return mails;
            }
            if Instant::now() >= deadline {
                self.timed_out(n, timeout, &mails);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The server's log (Python tracebacks, if any).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn timed_out(&self, n: usize, timeout: Duration, mails: &[Mail]) -> ! {
        let summary: Vec<String> = mails
            .iter()
            .map(|m| format!("{:?} to {:?}", m.subject, m.to))
            .collect();
        panic!(
            "timed out after {timeout:?} waiting for {n} mail(s); got {}: {summary:?}",
            mails.len()
        );
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "SMTP sink kept in {} (port {}, {} message(s) captured); last lines of {}:\n{}",
                self.dir.path().display(),
                self.port,
                self.messages().len(),
                self.log_path.display(),
                tail(&self.log_path, 20)
            );
        }
        if let Some(mut child) = self.child.take() {
            terminate_child(&mut child, libc::SIGTERM, Duration::from_secs(2));
        }
    }
}

/// Turns one JSON line written by the sink into a [`Mail`].
fn parse_record(line: &str) -> Mail {
    let value: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad sink record {line:?}: {e}"));
    let string = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let raw = string("content").unwrap_or_default();
    let (headers, raw_body) = split_message(&raw);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let subject = header("Subject")
        .map(|s| decode_encoded_words(&s))
        .unwrap_or_default();
    let encoding = header("Content-Transfer-Encoding")
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let body = decode_body(&raw_body, &encoding);
    Mail {
        from: string("from").unwrap_or_default(),
        to: value
            .get("to")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        subject,
        body,
        headers,
        raw,
        auth_login: string("auth_login"),
        auth_password: string("auth_password"),
    }
}

/// Splits a message into unfolded header fields and the body (with `\n` line
/// endings).
fn split_message(raw: &str) -> (Vec<(String, String)>, String) {
    let normalized = raw.replace("\r\n", "\n");
    let (head, body) = match normalized.find("\n\n") {
        Some(i) => (&normalized[..i], normalized[i + 2..].to_string()),
        None => (normalized.as_str(), String::new()),
    };
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            // A folded continuation of the previous field.
            if let Some((_, value)) = headers.last_mut() {
                value.push(' ');
                value.push_str(line.trim_start());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    (headers, body)
}

/// Undoes a single-part body's transfer encoding.
fn decode_body(body: &str, encoding: &str) -> String {
    match encoding {
        "base64" => match base64_decode(body) {
            Some(bytes) => String::from_utf8_lossy(&bytes).replace("\r\n", "\n"),
            None => body.to_string(),
        },
        "quoted-printable" => {
            String::from_utf8_lossy(&quoted_printable_decode(body, false)).into_owned()
        }
        _ => body.to_string(),
    }
}

/// Decodes RFC 2047 encoded words (`=?utf-8?B?...?=`, `=?utf-8?Q?...?=`);
/// whitespace between two encoded words is dropped, as the RFC says.
fn decode_encoded_words(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    let mut previous_was_word = false;
    while let Some(start) = rest.find("=?") {
        let decoded = parse_encoded_word(&rest[start..]);
        match decoded {
            Some((text, used)) => {
                let between = &rest[..start];
                if !(previous_was_word && between.trim().is_empty()) {
                    out.push_str(between);
                }
                out.push_str(&text);
                rest = &rest[start + used..];
                previous_was_word = true;
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = &rest[start + 2..];
                previous_was_word = false;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses one encoded word at the start of `s`; returns the text and the
/// number of bytes consumed.
fn parse_encoded_word(s: &str) -> Option<(String, usize)> {
    let inner = s.strip_prefix("=?")?;
    let (_charset, after_charset) = inner.split_once('?')?;
    let (encoding, after_encoding) = after_charset.split_once('?')?;
    let end = after_encoding.find("?=")?;
    let payload = &after_encoding[..end];
    let bytes = match encoding {
        "B" | "b" => base64_decode(payload)?,
        "Q" | "q" => quoted_printable_decode(payload, true),
        _ => return None,
    };
    let used = s.len() - after_encoding.len() + end + 2;
    // Every charset a Rust mailer sends is UTF-8 or a subset of it.
    Some((String::from_utf8_lossy(&bytes).into_owned(), used))
}

/// Decodes quoted-printable (`q_word`: RFC 2047 "Q", where `_` is a space).
fn quoted_printable_decode(input: &str, q_word: bool) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'=' if bytes.get(i + 1) == Some(&b'\n') => i += 2,
            b'=' if bytes.get(i + 1) == Some(&b'\r') && bytes.get(i + 2) == Some(&b'\n') => i += 3,
            b'=' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'=');
                        i += 1;
                    }
                }
            }
            b'_' if q_word => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Decodes standard base64, ignoring whitespace; `None` if it is not base64.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some((c - b'A') as u32),
            b'a'..=b'z' => Some((c - b'a' + 26) as u32),
            b'0'..=b'9' => Some((c - b'0' + 52) as u32),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in input.bytes() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            break;
        }
        acc = (acc << 6) | value(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_subjects_and_bodies() {
        assert_eq!(
            decode_encoded_words("=?utf-8?b?w6RiYw==?= =?utf-8?q?_d=C3=A9f?="),
            "äbc déf"
        );
        assert_eq!(decode_encoded_words("plain [alert] x"), "plain [alert] x");
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(quoted_printable_decode("a=3Db=\nc", false), b"a=bc");
        let (headers, body) = split_message("Subject: one\r\n two\r\nFrom: a@b\r\n\r\nline\r\n");
        assert_eq!(headers[0], ("Subject".to_string(), "one two".to_string()));
        assert_eq!(body, "line\n");
    }
}
