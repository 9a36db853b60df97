//! `[database]`: the PostgreSQL connection, the same section in the receiver's and the
//! manager's configuration.

use super::{invalid, ConfigError};
use serde::Deserialize;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// The `[database]` section as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// A libpq connection string or URL, instead of the separate keys.
    pub url: Option<String>,
    /// Host (default localhost).
    pub host: Option<String>,
    /// Port (default 5432).
    pub port: Option<u16>,
    /// User name.
    pub user: Option<String>,
    /// Database name.
    pub dbname: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Bound on connecting, in seconds (default 10).
    pub connect_timeout_secs: Option<u64>,
    /// libpq's sslmode: disable, allow, prefer (default), require, verify-ca, verify-full.
    pub sslmode: Option<String>,
    /// The CA certificate(s) the server's certificate must chain to.
    pub sslrootcert: Option<String>,
    /// The client certificate, for `cert` authentication.
    pub sslcert: Option<String>,
    /// The client certificate's private key.
    pub sslkey: Option<String>,
}

/// A validated PostgreSQL connection. Its `Debug` hides the passwords.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// A libpq-style connection string or URL, as tokio-postgres parses it.
    pub conninfo: String,
    /// Password from the environment, if configured (kept out of `conninfo` for logging).
    pub password: Option<String>,
    /// Bound on connecting.
    pub connect_timeout: Duration,
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("conninfo", &self.redacted())
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl DatabaseConfig {
    /// The connection string as it may be shown: [`redact_conninfo`] of `conninfo`.
    pub fn redacted(&self) -> String {
        redact_conninfo(&self.conninfo)
    }

    /// Validates the `[database]` section of the config file `path`; `role` names the
    /// database in messages ("replica", "provider").
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the key: both `url` and separate keys, a missing
    /// user or database name, settings that do not parse, an unset password variable.
    pub fn from_raw(path: &Path, d: RawDatabase, role: &str) -> Result<Self, ConfigError> {
        let conninfo = match d.url {
            Some(url) => {
                if d.host.is_some() || d.port.is_some() || d.user.is_some() || d.dbname.is_some() {
                    return Err(invalid(
                        path,
                        "database.url",
                        "set either database.url or database.host/port/user/dbname, not both",
                    ));
                }
                if d.sslmode.is_some()
                    || d.sslrootcert.is_some()
                    || d.sslcert.is_some()
                    || d.sslkey.is_some()
                {
                    return Err(invalid(
                        path,
                        "database.url",
                        "with database.url, give the TLS settings in its query (...?sslmode=verify-full&sslrootcert=/path), not as separate keys",
                    ));
                }
                url
            }
            None => {
                let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
                let user = d.user.ok_or_else(|| {
                    invalid(path, "database.user", "missing: set the database user")
                })?;
                let dbname = d.dbname.ok_or_else(|| {
                    invalid(
                        path,
                        "database.dbname",
                        format!("missing: set the {role} database name"),
                    )
                })?;
                let mut pairs = vec![
                    format!("host={}", quote(d.host.as_deref().unwrap_or("localhost"))),
                    format!("port={}", d.port.unwrap_or(5432)),
                    format!("user={}", quote(&user)),
                    format!("dbname={}", quote(&dbname)),
                ];
                for (key, value) in [
                    ("sslmode", &d.sslmode),
                    ("sslrootcert", &d.sslrootcert),
                    ("sslcert", &d.sslcert),
                    ("sslkey", &d.sslkey),
                ] {
                    if let Some(v) = value {
                        pairs.push(format!("{key}={}", quote(v)));
                    }
                }
                pairs.join(" ")
            }
        };
        let tls_invalid = |e: crate::pg::tls::TlsConfigError| {
            use crate::pg::tls::TlsConfigError as E;
            let key = match &e {
                E::Mode(_) => "database.sslmode".to_string(),
                E::HalfClientCert => "database.sslcert".to_string(),
                // Only a url can hold one: the TOML keys are a closed set.
                E::Unsupported(_) => "database.url".to_string(),
                E::NoRootCert { .. } => "database.sslrootcert".to_string(),
                E::File { key, .. } => format!("database.{key}"),
                E::Connector(_) => "database".to_string(),
            };
            invalid(path, &key, e.to_string())
        };
        let (rest, tls) = crate::pg::tls::split(&conninfo).map_err(tls_invalid)?;
        // Files named and missing are reported now, not at the first connection.
        tls.check().map_err(tls_invalid)?;
        if rest.parse::<tokio_postgres::Config>().is_err() {
            return Err(invalid(
                path,
                "database",
                "the connection settings do not parse as a libpq connection string or URL",
            ));
        }
        let password = match d.password_env {
            Some(var) => Some(std::env::var(&var).map_err(|_| {
                invalid(
                    path,
                    "database.password_env",
                    format!("environment variable {var} is not set (or not UTF-8)"),
                )
            })?),
            None => None,
        };
        Ok(DatabaseConfig {
            conninfo,
            password,
            connect_timeout: Duration::from_secs(d.connect_timeout_secs.unwrap_or(10).max(1)),
        })
    }
}

/// What a hidden password is replaced with.
pub const REDACTED: &str = "***";

/// `conninfo` with its passwords replaced by `***`, for messages, logs and files: the value
/// of every keyword containing `password` (`password=...`, quoted or not, any case) in the
/// libpq `key=value` form; in a `postgres://` or `postgresql://` URL, the password of the
/// user information (`user:pw@`, percent-encoded or not) and the value of every query
/// parameter whose (decoded) name contains `password`. A `key=value` string that stops
/// parsing has the rest hidden too, since where its values end is unknown.
pub fn redact_conninfo(conninfo: &str) -> String {
    let trimmed = conninfo.trim_start();
    let lead = &conninfo[..conninfo.len() - trimmed.len()];
    let lower = trimmed.to_ascii_lowercase();
    match ["postgres://", "postgresql://"]
        .iter()
        .find(|p| lower.starts_with(*p))
    {
        Some(prefix) => {
            let (scheme, rest) = trimmed.split_at(prefix.len());
            format!("{lead}{scheme}{}", redact_url_rest(rest))
        }
        None => redact_keywords(conninfo),
    }
}

/// The part of a URL after `scheme://`, redacted.
fn redact_url_rest(rest: &str) -> String {
    // tokio-postgres takes the user information up to the first '@'; libpq stops at the
    // host. A password holding a raw '@' would leak through either rule alone, so the user
    // information runs on to the last '@' before the host's end.
    let mut out = String::with_capacity(rest.len());
    let mut tail = rest;
    if let Some(first) = rest.find('@') {
        let mut end = first;
        loop {
            let after = &rest[end + 1..];
            let host_end = after.find(['/', '?']).unwrap_or(after.len());
            match after[..host_end].find('@') {
                Some(i) => end += 1 + i,
                None => break,
            }
        }
        let userinfo = &rest[..end];
        match userinfo.find(':') {
            Some(colon) => {
                out.push_str(&userinfo[..=colon]);
                out.push_str(REDACTED);
            }
            None => out.push_str(userinfo),
        }
        tail = &rest[end..];
    }
    match tail.find('?') {
        None => out.push_str(tail),
        Some(q) => {
            out.push_str(&tail[..=q]);
            let params: Vec<String> = tail[q + 1..]
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if names_a_password(&percent_decode(key)) => {
                        format!("{key}={REDACTED}")
                    }
                    _ => param.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
    }
    out
}

/// A libpq `key=value` string, redacted; read the way tokio-postgres reads it.
fn redact_keywords(conninfo: &str) -> String {
    let mut out = String::with_capacity(conninfo.len());
    let mut it = conninfo.char_indices().peekable();
    let take_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>, out: &mut String| {
        while let Some(&(_, c)) = it.peek() {
            if !c.is_whitespace() {
                break;
            }
            out.push(c);
            it.next();
        }
    };
    loop {
        take_ws(&mut it, &mut out);
        let mut key = String::new();
        while let Some(&(_, c)) = it.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            key.push(c);
            it.next();
        }
        if key.is_empty() && it.peek().is_none() {
            return out;
        }
        let mut gap = String::new();
        take_ws(&mut it, &mut gap);
        if it.next_if(|&(_, c)| c == '=').is_none() {
            // Not `key=value`: where a value would end is unknown, so nothing more is shown.
            out.push_str(REDACTED);
            return out;
        }
        out.push_str(&key);
        out.push_str(&gap);
        out.push('=');
        take_ws(&mut it, &mut out);
        let secret = names_a_password(&key);
        let mut value = String::new();
        let mut closed = true;
        if it.next_if(|&(_, c)| c == '\'').is_some() {
            value.push('\'');
            closed = false;
            while let Some((_, c)) = it.next() {
                value.push(c);
                if c == '\\' {
                    if let Some((_, escaped)) = it.next() {
                        value.push(escaped);
                    }
                } else if c == '\'' {
                    closed = true;
                    break;
                }
            }
        } else {
            while let Some(&(_, c)) = it.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                it.next();
                if c == '\\' {
                    if let Some((_, escaped)) = it.next() {
                        value.push(escaped);
                    }
                }
            }
        }
        if secret || !closed {
            out.push_str(REDACTED);
        } else {
            out.push_str(&value);
        }
        if !closed {
            return out;
        }
    }
}

/// Whether a connection parameter's name is a password's (`password`, `sslpassword`, ...).
fn names_a_password(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// `%XX` sequences decoded (others kept as they are), for comparing parameter names.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DatabaseConfig, ConfigError> {
        DatabaseConfig::from_raw(
            Path::new("/x.toml"),
            toml::from_str(text).unwrap(),
            "replica",
        )
    }

    #[test]
    fn keys_are_quoted_into_a_conninfo() {
        let c = parse("user = \"o'brien\"\ndbname = \"a b\"\nport = 5433\n").unwrap();
        assert_eq!(
            c.conninfo,
            "host='localhost' port=5433 user='o\\'brien' dbname='a b'"
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn mistakes_name_their_key() {
        for (text, key) in [
            ("dbname = \"d\"\n", "database.user"),
            ("user = \"u\"\n", "database.dbname"),
            ("url = \"postgres://x\"\nuser = \"u\"\n", "database.url"),
            ("url = \"postgres://x:notaport/d\"\n", "database"),
            (
                "user = \"u\"\ndbname = \"d\"\npassword_env = \"SLONY_TEST_UNSET_VARIABLE\"\n",
                "database.password_env",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn tls_keys_go_into_the_conninfo_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("it's root.crt");
        // Not loaded as a certificate here: verify-ca needs a real PEM, require does not.
        std::fs::write(&root, "").unwrap();
        let c = parse("user = \"u\"\ndbname = \"d\"\nsslmode = \"require\"\n").unwrap();
        assert_eq!(
            c.conninfo,
            "host='localhost' port=5432 user='u' dbname='d' sslmode='require'"
        );
        let (rest, tls) = crate::pg::tls::split(&c.conninfo).unwrap();
        assert_eq!(rest, "host='localhost' port=5432 user='u' dbname='d'");
        assert_eq!(tls.mode, crate::pg::tls::SslMode::Require);
        // A quote in the path survives the quoting into the conninfo and back.
        let quoted = format!(
            "user = \"u\"\ndbname = \"d\"\nsslmode = \"verify-ca\"\nsslrootcert = \"{}\"\n",
            root.display()
        );
        match parse(&quoted) {
            // The file is read, and refused for what it holds, naming the key.
            Err(ConfigError::Invalid { key, reason, .. }) => {
                assert_eq!(key, "database.sslrootcert");
                assert!(reason.contains("not a PEM certificate file"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tls_mistakes_name_their_key_and_what_to_do() {
        for (text, key, says) in [
            (
                "user = \"u\"\ndbname = \"d\"\nsslmode = \"verify_full\"\n",
                "database.sslmode",
                "is not one of disable, allow, prefer, require, verify-ca, verify-full",
            ),
            (
                "user = \"u\"\ndbname = \"d\"\nsslmode = \"verify-full\"\nsslrootcert = \"/nonexistent/root.crt\"\n",
                "database.sslrootcert",
                "sslrootcert /nonexistent/root.crt: cannot be read",
            ),
            (
                "user = \"u\"\ndbname = \"d\"\nsslkey = \"/k\"\n",
                "database.sslcert",
                "set both",
            ),
            (
                "url = \"postgres://u@db/d\"\nsslmode = \"require\"\n",
                "database.url",
                "give the TLS settings in its query",
            ),
            (
                "url = \"postgres://u@db/d?sslmode=verify-ca&sslrootcert=%2Fnonexistent%2Fca.pem\"\n",
                "database.sslrootcert",
                "sslrootcert /nonexistent/ca.pem: cannot be read",
            ),
            (
                "url = \"postgres://u@db/d?sslcrl=%2Fetc%2Fcrl.pem\"\n",
                "database.url",
                "sslcrl is not supported",
            ),
            (
                "url = \"postgres://u@db/d?sslmode=verify-fool\"\n",
                "database.sslmode",
                "\"verify-fool\"",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, reason, .. }) => {
                    assert_eq!(k, key, "{text}");
                    assert!(reason.contains(says), "{text}: {reason}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_url_with_tls_parameters_loads_and_still_hides_its_password() {
        let c =
            parse("url = \"postgres://rx:S3cret@db/replica?sslmode=require&application_name=x\"\n")
                .unwrap();
        assert_eq!(
            c.redacted(),
            "postgres://rx:***@db/replica?sslmode=require&application_name=x"
        );
    }

    /// The password tokio-postgres would send for `conninfo`.
    fn password_of(conninfo: &str) -> Option<Vec<u8>> {
        conninfo
            .parse::<tokio_postgres::Config>()
            .unwrap_or_else(|e| panic!("{conninfo}: {e}"))
            .get_password()
            .map(<[u8]>::to_vec)
    }

    #[test]
    fn keyword_passwords_are_hidden_quoted_or_not() {
        for (conninfo, secret, shown) in [
            (
                "host=db port=5433 user=rx password=S3cret dbname=replica",
                "S3cret",
                "host=db port=5433 user=rx password=*** dbname=replica",
            ),
            (
                "host=db password = 'it\\'s a \\\\ S3cret' dbname=replica",
                "S3cret",
                "host=db password = *** dbname=replica",
            ),
            (
                "password='with spaces S3cret' user=rx",
                "S3cret",
                "password=*** user=rx",
            ),
            ("password=esc\\ aped\\ S3cret", "S3cret", "password=***"),
            ("user=rx PASSWORD=S3cret", "S3cret", "user=rx PASSWORD=***"),
            (
                "host=db port=5432 user='rx' dbname='replica'",
                "none",
                "host=db port=5432 user='rx' dbname='replica'",
            ),
        ] {
            let out = redact_conninfo(conninfo);
            assert_eq!(out, shown, "{conninfo}");
            assert!(!out.contains(secret), "{conninfo} -> {out}");
        }
        // The cases are real: tokio-postgres reads a password out of them.
        assert_eq!(
            password_of("host=db password = 'it\\'s a \\\\ S3cret' dbname=replica").as_deref(),
            Some(&b"it's a \\ S3cret"[..])
        );
        assert_eq!(
            password_of("password=esc\\ aped\\ S3cret").as_deref(),
            Some(&b"esc aped S3cret"[..])
        );
    }

    #[test]
    fn a_string_that_stops_parsing_hides_the_rest() {
        assert_eq!(
            redact_conninfo("host=db password='S3cret"),
            "host=db password=***"
        );
        assert_eq!(redact_conninfo("host=db S3cret"), "host=db ***");
        assert_eq!(redact_conninfo("host=db oops S3cret=x"), "host=db ***");
        assert_eq!(redact_conninfo("host=db password S3cret"), "host=db ***");
    }

    #[test]
    fn url_passwords_are_hidden_encoded_or_not() {
        for (url, secret, shown) in [
            (
                "postgres://rx:S3cret@db:5433/replica",
                "S3cret",
                "postgres://rx:***@db:5433/replica",
            ),
            (
                "postgresql://rx:p%40ss%2FS3cret%3A@db/replica?sslmode=disable",
                "S3cret",
                "postgresql://rx:***@db/replica?sslmode=disable",
            ),
            (
                "postgres://rx:p@ssS3cret@db/replica",
                "S3cret",
                "postgres://rx:***@db/replica",
            ),
            (
                "postgres://rx:S3cret/with/slash@db/replica",
                "S3cret",
                "postgres://rx:***@db/replica",
            ),
            (
                "postgres://db/replica?user=rx&password=S3cret&connect_timeout=3",
                "S3cret",
                "postgres://db/replica?user=rx&password=***&connect_timeout=3",
            ),
            (
                "postgres://db/replica?pass%77ord=S3cret",
                "S3cret",
                "postgres://db/replica?pass%77ord=***",
            ),
            (
                "  POSTGRES://rx:S3cret@db1,db2:5433/replica",
                "S3cret",
                "  POSTGRES://rx:***@db1,db2:5433/replica",
            ),
            (
                "postgres://rx@db/replica",
                "none",
                "postgres://rx@db/replica",
            ),
        ] {
            let out = redact_conninfo(url);
            assert_eq!(out, shown, "{url}");
            assert!(!out.contains(secret), "{url} -> {out}");
        }
        assert_eq!(
            password_of("postgresql://rx:p%40ss%2FS3cret%3A@db/replica").as_deref(),
            Some(&b"p@ss/S3cret:"[..])
        );
        assert_eq!(
            password_of("postgres://db/replica?pass%77ord=S3cret").as_deref(),
            Some(&b"S3cret"[..])
        );
    }

    #[test]
    fn debug_output_hides_the_passwords() {
        let c = DatabaseConfig {
            conninfo: "postgres://rx:S3cret@db/replica".into(),
            password: Some("Env5ecret".into()),
            connect_timeout: Duration::from_secs(3),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("S3cret") && !shown.contains("Env5ecret"),
            "{shown}"
        );
        assert!(shown.contains("postgres://rx:***@db/replica"), "{shown}");
    }
}
