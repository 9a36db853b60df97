//! TLS to PostgreSQL, as libpq does it: `sslmode` (disable, allow, prefer, require,
//! verify-ca, verify-full), `sslrootcert`, `sslcert` and `sslkey`, read from a
//! `key=value` connection string or a URL's query. tokio-postgres knows only
//! disable/prefer/require and none of the file keys, so they are taken out of the
//! string here and turned into an OpenSSL connector (the OpenSSL that ssh2 already
//! links).
//!
//! A failed handshake is read into a [`HandshakeError`]: the connector's verification
//! callback records what OpenSSL refused in the server's certificate (its subject,
//! issuer and names), since the certificate is gone with the stream once the
//! handshake has failed. `allow` is taken as `prefer`: both end up encrypted when
//! the server offers TLS, and neither checks the certificate.

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
    /// One of libpq's TLS keys that is not read here (`sslcrl`, `sslpassword`...).
    #[error("{0} is not supported: of libpq's TLS settings only sslmode, sslrootcert, sslcert and sslkey are read; remove it{hint}", hint = unsupported_hint(.0))]
    Unsupported(String),
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

/// The keys read here (and taken out of what tokio-postgres is given).
const KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// libpq's other TLS keys: refused by name, rather than as a string that does not
/// parse, so that the operator knows which one and that it is not merely misspelt.
const UNSUPPORTED: [&str; 10] = [
    "sslcrl",
    "sslcrldir",
    "sslpassword",
    "sslcompression",
    "sslsni",
    "sslcertmode",
    "sslkeylogfile",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "requiressl",
];

/// What to do instead of an unsupported key, where there is something.
fn unsupported_hint(key: &str) -> &'static str {
    match key {
        "sslpassword" => " and give sslkey a key file that is not encrypted (mode 0600)",
        "sslcrl" | "sslcrldir" => " (certificate revocation lists are not checked)",
        _ => "",
    }
}

/// Whether `split` takes `key` out of the string.
fn is_taken(key: &str) -> bool {
    KEYS.contains(&key) || UNSUPPORTED.contains(&key)
}

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
            "sslkey" => tls.key = Some(value.into()),
            _ => return Err(TlsConfigError::Unsupported(key)),
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
        if is_taken(&k) {
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
        if is_taken(&key) {
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

// OpenSSL's verification results (x509_vfy.h) that mean "not signed by a CA we
// trust", and "not for this host"; the numbers are part of OpenSSL's ABI.
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT: i32 = 2;
const X509_V_ERR_CERT_SIGNATURE_FAILURE: i32 = 7;
const X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT: i32 = 18;
const X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN: i32 = 19;
const X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY: i32 = 20;
const X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE: i32 = 21;
const X509_V_ERR_HOSTNAME_MISMATCH: i32 = 62;
const X509_V_ERR_IP_ADDRESS_MISMATCH: i32 = 64;

/// What OpenSSL refused in the server's certificate, recorded while the handshake
/// runs: once it has failed, the stream and the certificate are gone.
#[derive(Debug, Clone)]
pub(crate) struct Rejection {
    /// The host name or address connected to.
    host: String,
    /// OpenSSL's verification result.
    code: i32,
    /// OpenSSL's text for it.
    reason: &'static str,
    /// The server's certificate's subject (`CN=...`).
    subject: String,
    /// Who signed it.
    issuer: String,
    /// The names it is for: its subjectAltName entries, else its CN.
    names: Vec<String>,
}

/// The OpenSSL connector of one connection, and what its verification refused.
pub(crate) struct Connector {
    /// Handed to tokio-postgres.
    pub(crate) make: postgres_openssl::MakeTlsConnector,
    /// Filled by the verification callback when it refuses the server's certificate.
    rejected: Arc<Mutex<Option<Rejection>>>,
}

/// A TLS handshake that failed, as an operator reads it: what was wrong, and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server answered "no TLS" (its `ssl` is off) and the mode demands it.
    #[error("the server does not support TLS, and sslmode={mode} demands it: turn on ssl in the server's postgresql.conf (ssl = on, ssl_cert_file, ssl_key_file), or, on a trusted network only, set sslmode=prefer")]
    NotOffered {
        /// The mode asked for.
        mode: String,
    },
    /// The server's certificate does not chain to the root certificate.
    #[error("the server's certificate ({subject}, issued by {issuer}) is not signed by the CA in {root} (sslmode={mode}): set sslrootcert to the CA certificate that signed it; OpenSSL: {reason}")]
    UnknownCa {
        /// The mode, as [`TlsSettings::mode_label`] shows it.
        mode: String,
        /// The root certificate file used.
        root: String,
        /// The server's certificate's subject.
        subject: String,
        /// Its issuer.
        issuer: String,
        /// OpenSSL's reason.
        reason: String,
    },
    /// verify-full: the certificate is good but for other names.
    #[error("the server's certificate is for {names}, not {host} (sslmode={mode}): connect by a name the certificate lists, or have it reissued with {host} in its subjectAltName")]
    WrongHost {
        /// The mode, as [`TlsSettings::mode_label`] shows it.
        mode: String,
        /// The host connected to.
        host: String,
        /// The names the certificate lists, comma-separated.
        names: String,
    },
    /// Any other fault of the certificate: expired, not yet valid, not for a server.
    #[error("the server's certificate ({subject}) is refused (sslmode={mode}): {reason}: have it reissued (or, if it is about dates, check this machine's clock)")]
    BadCertificate {
        /// The mode, as [`TlsSettings::mode_label`] shows it.
        mode: String,
        /// The server's certificate's subject.
        subject: String,
        /// OpenSSL's reason.
        reason: String,
    },
    /// The handshake failed for another reason (no common protocol, the server
    /// refused our client certificate, the connection dropped).
    #[error("the TLS handshake with the server failed (sslmode={mode}): {reason}")]
    Failed {
        /// The mode, as [`TlsSettings::mode_label`] shows it.
        mode: String,
        /// OpenSSL's reason, or tokio-postgres' text.
        reason: String,
    },
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

    /// The root certificate file: `sslrootcert`, else libpq's `~/.postgresql/root.crt`
    /// if it exists.
    pub fn root_file(&self) -> Option<PathBuf> {
        match &self.root_cert {
            Some(p) => Some(p.clone()),
            None => Some(default_file("root.crt")).filter(|p| p.exists()),
        }
    }

    /// The mode in effect: `require` with a root certificate (named, or libpq's default
    /// file present) checks it as verify-ca, as libpq does.
    pub fn effective_mode(&self) -> SslMode {
        match self.mode {
            SslMode::Require if self.root_file().is_some() => SslMode::VerifyCa,
            mode => mode,
        }
    }

    /// The mode as messages show it: `require` that verifies says so.
    pub fn mode_label(&self) -> String {
        match (self.mode, self.effective_mode()) {
            (SslMode::Require, SslMode::VerifyCa) => {
                "require, verifying as verify-ca since a root certificate is present".into()
            }
            (mode, _) => mode.name().into(),
        }
    }

    /// Checks that these settings make a connector: every file named is there and
    /// loads, a root certificate is there when one is needed.
    ///
    /// # Errors
    ///
    /// [`TlsConfigError`], naming the key.
    pub fn check(&self) -> Result<(), TlsConfigError> {
        self.connector().map(|_| ())
    }

    /// The OpenSSL connector for these settings; `None` for `disable`.
    ///
    /// # Errors
    ///
    /// A root certificate needed and missing, or a file that does not load.
    pub(crate) fn connector(&self) -> Result<Option<Connector>, TlsConfigError> {
        let mode = self.effective_mode();
        if mode == SslMode::Disable {
            return Ok(None);
        }
        let loading = |e: openssl::error::ErrorStack| TlsConfigError::Connector(e.to_string());
        let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(loading)?;
        let verify = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        if verify {
            let root = self.root_file().ok_or_else(|| TlsConfigError::NoRootCert {
                mode: mode.name(),
                default: default_file("root.crt").display().to_string(),
            })?;
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
            private_key_file(key)?;
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
        let mut make = postgres_openssl::MakeTlsConnector::new(builder.build());
        let rejected = Arc::new(Mutex::new(None));
        let record = Arc::clone(&rejected);
        let check_host = mode == SslMode::VerifyFull;
        make.set_callback(move |config, host| {
            // postgres-openssl checks the host name by default: only verify-full does.
            config.set_verify_hostname(check_host);
            if verify {
                let record = Arc::clone(&record);
                let host = host.to_string();
                config.set_verify_callback(SslVerifyMode::PEER, move |ok, ctx| {
                    if !ok {
                        let rejection = Rejection::of(&host, ctx);
                        if let Ok(mut slot) = record.lock() {
                            slot.get_or_insert(rejection);
                        }
                    }
                    ok
                });
            }
            Ok(())
        });
        Ok(Some(Connector { make, rejected }))
    }

    /// The reading of a failed connection's error `text` and of what the connector's
    /// verification refused, if anything; `None` when the failure is not about TLS.
    pub(crate) fn handshake_error(
        &self,
        rejection: Option<Rejection>,
        text: &str,
    ) -> Option<HandshakeError> {
        let mode = self.mode_label();
        let lower = text.to_ascii_lowercase();
        if lower.contains("server does not support tls") {
            // Whether the certificate would have been checked does not matter here.
            return Some(HandshakeError::NotOffered {
                mode: self.mode.name().into(),
            });
        }
        let rejection = rejection.filter(|_| lower.contains("tls handshake"));
        if let Some(r) = rejection {
            let reason = r.reason.to_string();
            return Some(match r.code {
                X509_V_ERR_HOSTNAME_MISMATCH | X509_V_ERR_IP_ADDRESS_MISMATCH => {
                    HandshakeError::WrongHost {
                        mode,
                        host: r.host,
                        names: if r.names.is_empty() {
                            "no host name at all".into()
                        } else {
                            r.names.join(", ")
                        },
                    }
                }
                X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT
                | X509_V_ERR_CERT_SIGNATURE_FAILURE
                | X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
                | X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
                | X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
                | X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE => HandshakeError::UnknownCa {
                    mode,
                    root: self
                        .root_file()
                        .unwrap_or_else(|| default_file("root.crt"))
                        .display()
                        .to_string(),
                    subject: r.subject,
                    issuer: r.issuer,
                    reason,
                },
                _ => HandshakeError::BadCertificate {
                    mode,
                    subject: r.subject,
                    reason,
                },
            });
        }
        if lower.contains("error performing tls handshake") {
            return Some(HandshakeError::Failed {
                mode,
                reason: openssl_reason(text),
            });
        }
        None
    }
}

impl Connector {
    /// What the verification refused in the last handshake, taken.
    pub(crate) fn take_rejection(&self) -> Option<Rejection> {
        self.rejected.lock().ok().and_then(|mut r| r.take())
    }
}

impl Rejection {
    /// What the verification callback sees when it refuses a certificate.
    fn of(host: &str, ctx: &openssl::x509::X509StoreContextRef) -> Rejection {
        let error = ctx.error();
        // The leaf is the server's own certificate, whatever depth the fault is at.
        let leaf = ctx
            .chain()
            .and_then(|chain| chain.get(0))
            .or_else(|| ctx.current_cert());
        let (subject, issuer, names) = match leaf {
            Some(cert) => (
                name_text(cert.subject_name()),
                name_text(cert.issuer_name()),
                cert_names(cert),
            ),
            None => ("no certificate".into(), "nobody".into(), Vec::new()),
        };
        Rejection {
            host: host.to_string(),
            code: error.as_raw(),
            reason: error.error_string(),
            subject,
            issuer,
            names,
        }
    }
}

/// `CN=..., O=...` of an X.509 name.
fn name_text(name: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{key}={value}")
        })
        .collect();
    if parts.is_empty() {
        "an empty subject".into()
    } else {
        parts.join(", ")
    }
}

/// The host names and addresses a certificate is for: its subjectAltName entries,
/// else (as verify-full then falls back to it) its common name.
fn cert_names(cert: &openssl::x509::X509Ref) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(alt) = cert.subject_alt_names() {
        for name in &alt {
            if let Some(dns) = name.dnsname() {
                names.push(dns.to_string());
            } else if let Some(ip) = name.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                if let Some(ip) = ip {
                    names.push(ip.to_string());
                }
            }
        }
    }
    if names.is_empty() {
        for cn in cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        {
            if let Ok(s) = cn.data().to_string() {
                names.push(s);
            }
        }
    }
    names
}

/// OpenSSL's reason in a handshake error's text (`error:0A000418:SSL
/// routines:ssl3_read_bytes:tlsv1 alert unknown ca:...`: the fifth field), else the
/// text after tokio-postgres' "error performing TLS handshake: ".
fn openssl_reason(text: &str) -> String {
    if let Some(at) = text.find("error:") {
        if let Some(reason) = text[at..].split(':').nth(4) {
            if !reason.trim().is_empty() {
                return reason.trim().to_string();
            }
        }
    }
    text.split_once("error performing TLS handshake: ")
        .map_or(text, |(_, rest)| rest)
        .to_string()
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

/// libpq's rule for a private key file: owned by root, group read at most (0640, so
/// that a system-wide key can be shared through a group); owned by anyone else, the
/// owner's access only (0600).
fn private_key_file(path: &Path) -> Result<(), TlsConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| TlsConfigError::File {
        key: "sslkey",
        path: path.display().to_string(),
        reason: format!("cannot be read: {e}"),
    })?;
    let mode = meta.mode() & 0o777;
    let (bad, allowed) = if meta.uid() == 0 {
        (mode & 0o037, "0640")
    } else {
        (mode & 0o077, "0600")
    };
    if bad != 0 {
        return Err(TlsConfigError::File {
            key: "sslkey",
            path: path.display().to_string(),
            reason: format!(
                "has group or world access (mode {mode:04o}): make it {allowed} or less (chmod {allowed} {})",
                path.display()
            ),
        });
    }
    Ok(())
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
        let (_, tls) = split("host=db sslmode=allow").unwrap();
        assert_eq!(tls.mode, SslMode::Prefer);
        let (_, tls) = split("host=db sslmode=require sslrootcert=/r").unwrap();
        assert_eq!(tls.effective_mode(), SslMode::VerifyCa);
        assert_eq!(
            tls.mode_label(),
            "require, verifying as verify-ca since a root certificate is present"
        );
        assert_eq!(tls.negotiation(), tokio_postgres::config::SslMode::Require);
    }

    #[test]
    fn spaces_around_the_equals_sign_and_escapes_are_read_as_tokio_postgres_does() {
        let (rest, tls) =
            split("host=db sslmode = verify-full  sslrootcert=/a\\ b dbname='x'").unwrap();
        assert_eq!(rest, "host=db dbname='x'");
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/a b")));
        // A string that does not parse is passed on whole, for tokio-postgres to refuse.
        let (rest, tls) = split("host=db sslmode='verify-full").unwrap();
        assert_eq!(rest, "host=db sslmode='verify-full");
        assert_eq!(tls, TlsSettings::default());
    }

    fn rejection(code: i32, reason: &'static str) -> Rejection {
        Rejection {
            host: "127.0.0.1".into(),
            code,
            reason,
            subject: "CN=db.example".into(),
            issuer: "CN=Site CA".into(),
            names: vec!["db.example".into(), "10.0.0.5".into()],
        }
    }

    const HANDSHAKE: &str = "error performing TLS handshake: error:0A000086:SSL routines:tls_post_process_server_certificate:certificate verify failed:../ssl/statem/statem_clnt.c:2091:: certificate verify failed";

    #[test]
    fn each_refusal_of_the_server_s_certificate_says_what_was_wrong() {
        let (_, full) = split("host=db sslmode=verify-full sslrootcert=/etc/ca.crt").unwrap();
        let e = full
            .handshake_error(
                Some(rejection(
                    X509_V_ERR_IP_ADDRESS_MISMATCH,
                    "IP address mismatch",
                )),
                HANDSHAKE,
            )
            .unwrap();
        assert_eq!(
            e.to_string(),
            "the server's certificate is for db.example, 10.0.0.5, not 127.0.0.1 (sslmode=verify-full): connect by a name the certificate lists, or have it reissued with 127.0.0.1 in its subjectAltName"
        );
        let e = full
            .handshake_error(
                Some(rejection(
                    X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY,
                    "unable to get local issuer certificate",
                )),
                HANDSHAKE,
            )
            .unwrap();
        assert_eq!(
            e.to_string(),
            "the server's certificate (CN=db.example, issued by CN=Site CA) is not signed by the CA in /etc/ca.crt (sslmode=verify-full): set sslrootcert to the CA certificate that signed it; OpenSSL: unable to get local issuer certificate"
        );
        let e = full
            .handshake_error(Some(rejection(10, "certificate has expired")), HANDSHAKE)
            .unwrap();
        assert!(
            matches!(&e, HandshakeError::BadCertificate { reason, .. } if reason == "certificate has expired"),
            "{e}"
        );
    }

    #[test]
    fn other_handshake_failures_are_told_apart_from_the_server_s_answers() {
        let (_, require) = split("host=db sslmode=require").unwrap();
        assert_eq!(
            require.handshake_error(
                None,
                "error performing TLS handshake: server does not support TLS"
            ),
            Some(HandshakeError::NotOffered {
                mode: "require".into()
            })
        );
        assert_eq!(
            require.handshake_error(
                None,
                "error performing TLS handshake: error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:../ssl/record/rec_layer_s3.c:1605:SSL alert number 48"
            ),
            Some(HandshakeError::Failed {
                mode: "require".into(),
                reason: "tlsv1 alert unknown ca".into()
            })
        );
        // The server's own refusal is not a TLS matter, even with a rejection recorded.
        assert_eq!(
            require.handshake_error(
                Some(rejection(X509_V_ERR_HOSTNAME_MISMATCH, "hostname mismatch")),
                "FATAL:  password authentication failed for user \"rx\" (SQLSTATE 28P01)"
            ),
            None
        );
    }

    #[test]
    fn a_private_key_others_can_read_is_refused_as_libpq_does() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client.key");
        std::fs::write(&key, "not read").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(private_key_file(&key), Ok(()));
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).unwrap();
        let e = private_key_file(&key).unwrap_err().to_string();
        assert!(
            e.contains("has group or world access (mode 0604)") && e.contains("chmod 0"),
            "{e}"
        );
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
        assert_eq!(
            split("postgres://u@db/x?sslcrl=%2Fcrl.pem"),
            Err(TlsConfigError::Unsupported("sslcrl".into()))
        );
        assert_eq!(
            split("host=db sslpassword=S3cret"),
            Err(TlsConfigError::Unsupported("sslpassword".into()))
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
