//! TLS to PostgreSQL, as libpq does it: `sslmode` (disable, allow, prefer, require,
//! verify-ca, verify-full), `sslrootcert`, `sslcert` and `sslkey`, read from a
//! `key=value` connection string or a URL's query. tokio-postgres knows only
//! disable/prefer/require and none of the file keys, so they are taken out of the
//! string here and turned into an OpenSSL connector (the OpenSSL that ssh2 already
//! links).

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use std::path::{Path, PathBuf};

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it; no certificate check (libpq's `allow` and
    /// `prefer` differ only in which they try first).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked only when a root certificate is given
    /// (then as verify-ca, as libpq does).
    Require,
    /// TLS, the server's certificate signed by the root certificate.
    VerifyCa,
    /// verify-ca, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// The name as libpq spells it.
    pub fn name(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The TLS settings of one connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode` (default prefer).
    pub mode: SslMode,
    /// `sslrootcert`: the CA certificates the server's must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`: the client certificate.
    pub cert: Option<PathBuf>,
    /// `sslkey`: the client certificate's key.
    pub key: Option<PathBuf>,
}

/// A TLS setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsConfigError {
    /// `sslmode` has a value libpq does not know.
    #[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    Mode(String),
    /// One of `sslcert` and `sslkey` without the other.
    #[error(
        "sslcert and sslkey go together: set both (the client certificate and its key) or neither"
    )]
    HalfClientCert,
    /// verify-ca or verify-full with no root certificate to verify against.
    #[error("sslmode={mode} needs the CA certificate to check the server against: set sslrootcert, or put it in {default}")]
    NoRootCert {
        /// The mode asked for.
        mode: &'static str,
        /// libpq's default place.
        default: String,
    },
    /// A named file cannot be read.
    #[error("{key} {path}: {reason}")]
    File {
        /// The key naming it.
        key: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The files do not make a TLS connector (not PEM, key not matching the certificate).
    #[error("the TLS files do not load: {0}")]
    Connector(String),
}

const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits the TLS keys out of `conninfo`: what tokio-postgres is given (with its own
/// `sslmode` left out), and the settings.
///
/// # Errors
///
/// [`TlsConfigError::Mode`] for an unknown `sslmode`; [`TlsConfigError::HalfClientCert`].
pub fn split(conninfo: &str) -> Result<(String, TlsSettings), TlsConfigError> {
    let trimmed = conninfo.trim_start().to_ascii_lowercase();
    let (rest, pairs) =
        if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
            split_url(conninfo)
        } else {
            split_keywords(conninfo)
        };
    let mut tls = TlsSettings::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sslmode" => tls.mode = SslMode::parse(&value).ok_or(TlsConfigError::Mode(value))?,
            "sslrootcert" => tls.root_cert = Some(value.into()),
            "sslcert" => tls.cert = Some(value.into()),
            _ => tls.key = Some(value.into()),
        }
    }
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(TlsConfigError::HalfClientCert);
    }
    Ok((rest, tls))
}

/// A URL: the TLS parameters of its query taken out (percent-decoded).
fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in query.split('&') {
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        let k = crate::config::percent_decode(k);
        if KEYS.contains(&k.as_str()) {
            taken.push((k, crate::config::percent_decode(v)));
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

/// A `key=value` string: the TLS pairs taken out (unquoted), the others kept as written.
/// A string that stops parsing is passed on whole, for tokio-postgres to refuse.
fn split_keywords(conninfo: &str) -> (String, Vec<(String, String)>) {
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    let chars: Vec<char> = conninfo.chars().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            i += 1;
        }
        let key: String = chars[start..i].iter().collect();
        skip_ws(&mut i);
        if i >= chars.len() || chars[i] != '=' {
            return (conninfo.to_string(), Vec::new());
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        value.push(chars[i + 1]);
                        i += 2;
                    }
                    '\'' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            if !closed {
                return (conninfo.to_string(), Vec::new());
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                value.push(chars[i]);
                i += 1;
            }
        }
        let raw: String = chars[start..i].iter().collect();
        if KEYS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(raw);
        }
    }
    (kept.join(" "), taken)
}

/// Where libpq looks for a file when its key is unset: `~/.postgresql/<name>`.
fn default_file(name: &str) -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    Path::new(&home).join(".postgresql").join(name)
}

impl TlsSettings {
    /// The mode tokio-postgres is to use: whether TLS is tried, and demanded.
    pub fn negotiation(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The mode in effect: `require` with a root certificate checks it, as libpq does.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    /// The OpenSSL connector for these settings; `None` for `disable`.
    ///
    /// # Errors
    ///
    /// A root certificate needed and missing, or a file that does not load.
    pub fn connector(&self) -> Result<Option<postgres_openssl::MakeTlsConnector>, TlsConfigError> {
        let mode = self.effective_mode();
        if mode == SslMode::Disable {
            return Ok(None);
        }
        let loading = |e: openssl::error::ErrorStack| TlsConfigError::Connector(e.to_string());
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(loading)?;
        let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        if verify {
            let root = match &self.root_cert {
                Some(p) => p.clone(),
                None => {
                    let p = default_file("root.crt");
                    if !p.exists() {
                        return Err(TlsConfigError::NoRootCert {
                            mode: mode.name(),
                            default: p.display().to_string(),
                        });
                    }
                    p
                }
            };
            readable("sslrootcert", &root)?;
            builder
                .set_ca_file(&root)
                .map_err(|e| TlsConfigError::File {
                    key: "sslrootcert",
                    path: root.display().to_string(),
                    reason: format!("not a PEM certificate file: {e}"),
                })?;
            builder.set_verify(SslVerifyMode::PEER);
        } else {
            builder.set_verify(SslVerifyMode::NONE);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            readable("sslcert", cert)?;
            readable("sslkey", key)?;
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| TlsConfigError::File {
                    key: "sslcert",
                    path: cert.display().to_string(),
                    reason: format!("not a PEM certificate file: {e}"),
                })?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| TlsConfigError::File {
                    key: "sslkey",
                    path: key.display().to_string(),
                    reason: format!("not a PEM private key: {e}"),
                })?;
            builder
                .check_private_key()
                .map_err(|e| TlsConfigError::File {
                    key: "sslkey",
                    path: key.display().to_string(),
                    reason: format!("does not match the certificate in sslcert: {e}"),
                })?;
        }
        let mut connector = postgres_openssl::MakeTlsConnector::new(builder.build());
        let check_host = mode == SslMode::VerifyFull;
        connector.set_callback(move |config, _host| {
            // postgres-openssl checks the host name by default: only verify-full does.
            config.set_verify_hostname(check_host);
            if !check_host {
                config.set_use_server_name_indication(true);
            }
            Ok(())
        });
        Ok(Some(connector))
    }
}

fn readable(key: &'static str, path: &Path) -> Result<(), TlsConfigError> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|e| TlsConfigError::File {
            key,
            path: path.display().to_string(),
            reason: format!("cannot be read: {e}"),
        })
}

/// An operator's reading of a failed TLS handshake, from the error's text and causes;
/// `None` when the failure is not about TLS.
pub fn explain(mode: SslMode, root: Option<&Path>, text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    // OpenSSL's chain repeats its error stack around the one useful part, the
    // verification's reason ("self-signed certificate in certificate chain").
    let reason = text
        .split(": ")
        .map(|part| part.trim_matches(':').trim())
        .find(|part| {
            !part.is_empty() && !part.contains("error:") && !part.starts_with("error performing")
        })
        .unwrap_or(text);
    let text = reason;
    let root = root
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| default_file("root.crt").display().to_string());
    if lower.contains("server does not support tls")
        || lower.contains("server does not support ssl")
    {
        return Some(format!(
            "the server does not offer TLS, and sslmode={} demands it: turn on ssl in the server's postgresql.conf, or (on a trusted network only) set sslmode=prefer",
            mode.name()
        ));
    }
    if lower.contains("hostname mismatch") || lower.contains("ip address mismatch") {
        return Some(format!(
            "the server's certificate does not name the host connected to (sslmode={}): connect by a name the certificate lists, or have the certificate reissued for this host; detail: {text}",
            mode.name()
        ));
    }
    if lower.contains("certificate verify failed") {
        return Some(format!(
            "the server's certificate is not signed by the CA in {root} (sslmode={}): set sslrootcert to the CA that signed the server's certificate; detail: {text}",
            mode.name()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_lose_their_tls_keys_and_keep_the_rest_as_written() {
        let (rest, tls) = split(
            "host=db port=5432 sslmode=verify-full sslrootcert='/etc/ca dir/root.crt' user='a b' sslcert=/c sslkey=/k",
        )
        .unwrap();
        assert_eq!(rest, "host=db port=5432 user='a b'");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca dir/root.crt")));
        assert_eq!(tls.cert, Some(PathBuf::from("/c")));
        assert_eq!(tls.key, Some(PathBuf::from("/k")));
        assert!(rest.parse::<tokio_postgres::Config>().is_ok());
    }

    #[test]
    fn a_url_loses_its_tls_parameters() {
        let (rest, tls) = split(
            "postgresql://u@db:5432/x?sslmode=verify-ca&application_name=a&sslrootcert=%2Fca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgresql://u@db:5432/x?application_name=a");
        assert_eq!(tls.mode, SslMode::VerifyCa);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/ca.pem")));
        let (rest, tls) = split("postgres://u@db/x?sslmode=disable").unwrap();
        assert_eq!(rest, "postgres://u@db/x");
        assert_eq!(tls.mode, SslMode::Disable);
    }

    #[test]
    fn prefer_is_the_default_and_require_with_a_root_verifies() {
        let (_, tls) = split("host=db").unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        let (_, tls) = split("host=db sslmode=require sslrootcert=/r").unwrap();
        assert_eq!(tls.effective_mode(), SslMode::VerifyCa);
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(
            split("host=db sslmode=verify_full"),
            Err(TlsConfigError::Mode("verify_full".into()))
        );
        assert_eq!(
            split("host=db sslcert=/c"),
            Err(TlsConfigError::HalfClientCert)
        );
        let (_, tls) =
            split("host=db sslmode=verify-ca sslrootcert=/nonexistent/root.crt").unwrap();
        let e = tls.connector().err().unwrap().to_string();
        assert!(
            e.starts_with("sslrootcert /nonexistent/root.crt: cannot be read"),
            "{e}"
        );
    }
}
