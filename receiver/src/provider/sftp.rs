//! ONE SSH session to the provider (ssh2/libssh2): host-key check against known_hosts,
//! key-file or agent login, SFTP listing, reads, downloads and uploads.
//!
//! ssh2 blocks: a [`Remote`] is only ever used on tokio's blocking pool, through
//! [`super::Provider`]. Every download goes to `<name>.part` and is renamed only once its
//! size matches the listing, so a cut connection never leaves a file that looks whole.

use crate::config::{RemoteConfig, SshAuth};
use ssh2::{CheckResult, KnownHostFileKind, Session, Sftp};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// A failure talking to the provider.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// TCP connection or SSH handshake failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The host key is not in known_hosts.
    #[error("the host key of {addr} ({key_type}) is not in {known_hosts}: refusing to connect. If this is the right provider, add its key (ssh-keyscan -p PORT HOST >> known_hosts after checking the fingerprint)")]
    UnknownHostKey {
        /// host:port.
        addr: String,
        /// Key algorithm.
        key_type: String,
        /// The known_hosts file used.
        known_hosts: PathBuf,
    },
    /// The host key differs from the one in known_hosts.
    #[error("the host key of {addr} does NOT match the one in {known_hosts}: refusing to connect (possible man-in-the-middle, or the provider was reinstalled; verify before updating known_hosts)")]
    HostKeyChanged {
        /// host:port.
        addr: String,
        /// The known_hosts file used.
        known_hosts: PathBuf,
    },
    /// Login refused.
    #[error("SSH login as {user}@{addr} refused: {reason}")]
    Auth {
        /// host:port.
        addr: String,
        /// Login user.
        user: String,
        /// Why.
        reason: String,
    },
    /// An SFTP operation failed.
    #[error("{op} {path} on {addr}: {reason}")]
    Sftp {
        /// host:port.
        addr: String,
        /// What we were doing.
        op: &'static str,
        /// The remote path.
        path: String,
        /// Why.
        reason: String,
    },
    /// The provider directory holds something we refuse to touch.
    #[error("{path} on {addr}: {reason}")]
    Refused {
        /// host:port.
        addr: String,
        /// The remote path.
        path: String,
        /// Why.
        reason: String,
    },
    /// A task driving the session failed (a bug, not the provider's doing).
    #[error("internal: {0}")]
    Internal(String),
    /// Writing the local copy failed.
    #[error("writing {path}: {source}")]
    Local {
        /// The local file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl RemoteError {
    /// A stable short key naming the kind of failure (for alert de-duplication).
    pub fn key(&self) -> &'static str {
        match self {
            RemoteError::Connect { .. } => "connect",
            RemoteError::UnknownHostKey { .. } => "hostkey-unknown",
            RemoteError::HostKeyChanged { .. } => "hostkey-changed",
            RemoteError::Auth { .. } => "auth",
            RemoteError::Sftp { .. } => "sftp",
            RemoteError::Refused { .. } => "refused",
            RemoteError::Local { .. } => "local",
            RemoteError::Internal(_) => "internal",
        }
    }
}

/// One entry of a remote directory.
#[derive(Debug, Clone)]
pub struct RemoteFile {
    /// File name (no directory).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Whether it is a regular file (not a symlink, directory or device).
    pub regular: bool,
    /// Whether it is a symbolic link.
    pub symlink: bool,
    /// Modification time (seconds since the epoch), when the server says.
    pub mtime: Option<u64>,
}

/// An open SSH session with its SFTP channel.
pub struct Remote {
    /// Kept alive for the channel's sake.
    _session: Session,
    /// The SFTP channel all operations use.
    sftp: Sftp,
    /// host:port, for messages.
    addr: String,
}

impl Remote {
    /// Connects, checks the host key, logs in and opens SFTP.
    pub fn connect(cfg: &RemoteConfig) -> Result<Remote, RemoteError> {
        let addr = format!("{}:{}", cfg.host, cfg.port);
        let connect_err = |reason: String| RemoteError::Connect {
            addr: addr.clone(),
            reason,
        };
        let sockaddrs: Vec<_> = (cfg.host.as_str(), cfg.port)
            .to_socket_addrs()
            .map_err(|e| connect_err(format!("cannot resolve host: {e}")))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for sa in sockaddrs {
            match TcpStream::connect_timeout(&sa, cfg.timeout) {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp
            .ok_or_else(|| connect_err(last.map_or("no address".to_string(), |e| e.to_string())))?;
        let _ = tcp.set_nodelay(true);
        let mut session = Session::new().map_err(|e| connect_err(e.to_string()))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(cfg.timeout.as_millis().min(u32::MAX as u128) as u32);
        session
            .handshake()
            .map_err(|e| connect_err(format!("SSH handshake failed: {e}")))?;

        check_host_key(&session, cfg, &addr)?;

        let auth_err = |reason: String| RemoteError::Auth {
            addr: addr.clone(),
            user: cfg.user.clone(),
            reason,
        };
        match &cfg.auth {
            SshAuth::KeyFile { path, passphrase } => {
                if !path.exists() {
                    return Err(auth_err(format!(
                        "key file {} does not exist",
                        path.display()
                    )));
                }
                session
                    .userauth_pubkey_file(&cfg.user, None, path, passphrase.as_deref())
                    .map_err(|e| auth_err(format!("with key {}: {e}", path.display())))?;
            }
            SshAuth::Agent => session
                .userauth_agent(&cfg.user)
                .map_err(|e| auth_err(format!("with ssh-agent (SSH_AUTH_SOCK): {e}")))?,
        }
        if !session.authenticated() {
            return Err(auth_err("not authenticated".into()));
        }
        let sftp = session.sftp().map_err(|e| RemoteError::Sftp {
            addr: addr.clone(),
            op: "opening SFTP",
            path: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Remote {
            _session: session,
            sftp,
            addr,
        })
    }

    /// Lists a site directory (symlinks inside reported as such, not followed).
    ///
    /// The directory itself must be a real directory: a symbolic link could point this
    /// site at another site's stream, or anywhere else on the provider.
    pub fn list(&self, dir: &str) -> Result<Vec<RemoteFile>, RemoteError> {
        let stat = self
            .sftp
            .lstat(Path::new(dir))
            .map_err(|e| self.sftp_err("listing", dir, e))?;
        if stat.file_type().is_symlink() {
            return Err(RemoteError::Refused {
                addr: self.addr.clone(),
                path: dir.to_string(),
                reason: "is a symbolic link; the site directory must be a real directory \
                         under remote.log_dir"
                    .into(),
            });
        }
        // Entry by entry, not ssh2's `readdir` (which holds every entry's full path and
        // attributes at once): a site directory may hold 100,000 archives.
        let mut handle = self
            .sftp
            .opendir(Path::new(dir))
            .map_err(|e| self.sftp_err("listing", dir, e))?;
        let mut out = Vec::new();
        loop {
            let (path, stat) = match handle.readdir() {
                Ok(entry) => entry,
                // LIBSSH2_ERROR_FILE: the end of the directory.
                Err(e) if matches!(e.code(), ssh2::ErrorCode::Session(-16)) => break,
                Err(e) => return Err(self.sftp_err("listing", dir, e)),
            };
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let ft = stat.file_type();
            out.push(RemoteFile {
                name: name.to_string(),
                size: stat.size.unwrap_or(0),
                regular: ft.is_file(),
                symlink: ft.is_symlink(),
                mtime: stat.mtime,
            });
        }
        Ok(out)
    }

    /// Downloads `remote` to `local` (via `<local>.part`), checking the size is `expected`.
    pub fn download(&self, remote: &str, local: &Path, expected: u64) -> Result<u64, RemoteError> {
        let part = part_path(local);
        let result = self.download_to(remote, &part, expected);
        match result {
            Ok(n) => {
                std::fs::rename(&part, local).map_err(|source| RemoteError::Local {
                    path: local.to_path_buf(),
                    source,
                })?;
                Ok(n)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }

    /// Reads at most `max` bytes from the start of the remote file `path` (fewer if the
    /// file is shorter), without downloading the rest: `status` needs only an archive's
    /// header to learn when it was created.
    pub fn read_head(&self, path: &str, max: usize) -> Result<Vec<u8>, RemoteError> {
        let mut file = self
            .sftp
            .open(Path::new(path))
            .map_err(|e| self.sftp_err("opening", path, e))?;
        self.read_open(&mut file, path, max as u64)
    }

    /// Reads at most `max` bytes of the open remote `file` (`path`, for messages).
    fn read_open(
        &self,
        file: &mut ssh2::File,
        path: &str,
        max: u64,
    ) -> Result<Vec<u8>, RemoteError> {
        let mut bytes = Vec::with_capacity(max.min(64 * 1024) as usize);
        Read::by_ref(file)
            .take(max)
            .read_to_end(&mut bytes)
            .map_err(|e| RemoteError::Sftp {
                addr: self.addr.clone(),
                op: "reading",
                path: path.to_string(),
                reason: e.to_string(),
            })?;
        Ok(bytes)
    }

    fn download_to(&self, remote: &str, part: &Path, expected: u64) -> Result<u64, RemoteError> {
        let mut src = self
            .sftp
            .open(Path::new(remote))
            .map_err(|e| self.sftp_err("opening", remote, e))?;
        let local_err = |source| RemoteError::Local {
            path: part.to_path_buf(),
            source,
        };
        let mut dst = slony_shared::private::create(part).map_err(local_err)?;
        // libssh2 asks for as much as the buffer holds, ahead: a buffer the size of a
        // small file costs one request. Reading stops at the listed size, without a
        // request to see the end of the file: a file that grew since is caught by the
        // check that follows (it must end as an archive ends), one that shrank here.
        let mut buf = vec![0u8; (expected as usize).clamp(1, 256 * 1024)];
        let mut total = 0u64;
        while total < expected {
            slony_shared::service::beat();
            let n = match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(RemoteError::Sftp {
                        addr: self.addr.clone(),
                        op: "reading",
                        path: remote.to_string(),
                        reason: e.to_string(),
                    })
                }
            };
            dst.write_all(&buf[..n]).map_err(local_err)?;
            total += n as u64;
        }
        if total != expected {
            return Err(RemoteError::Sftp {
                addr: self.addr.clone(),
                op: "downloading",
                path: remote.to_string(),
                reason: format!("got {total} bytes, the listing said {expected}; will fetch again"),
            });
        }
        // No fsync: every download is verified complete before it is applied, so a file
        // torn by a crash is found incomplete and fetched again; an fsync per small
        // archive would cost more than the transfer.
        Ok(total)
    }

    fn sftp_err(&self, op: &'static str, path: &str, e: ssh2::Error) -> RemoteError {
        RemoteError::Sftp {
            addr: self.addr.clone(),
            op,
            path: path.to_string(),
            reason: e.to_string(),
        }
    }

    /// Reads a small remote file whole; `None` if it does not exist. Files larger than
    /// `max` are refused (they come from the other side).
    pub fn read_small(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, RemoteError> {
        let stat = match self.sftp.lstat(Path::new(path)) {
            Ok(stat) => stat,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.sftp_err("checking", path, e)),
        };
        if !stat.file_type().is_file() {
            return Err(RemoteError::Refused {
                addr: self.addr.clone(),
                path: path.to_string(),
                reason: "is not a regular file".into(),
            });
        }
        let size = stat.size.unwrap_or(0);
        if size > max {
            return Err(RemoteError::Refused {
                addr: self.addr.clone(),
                path: path.to_string(),
                reason: format!("is {size} bytes, more than the {max} allowed"),
            });
        }
        let mut bytes = self.read_head(path, max as usize + 1)?;
        bytes.truncate(max as usize);
        Ok(Some(bytes))
    }

    /// The size of a remote regular file; `None` if it does not exist.
    pub fn size_of(&self, path: &str) -> Result<Option<u64>, RemoteError> {
        match self.sftp.lstat(Path::new(path)) {
            Ok(stat) if stat.file_type().is_file() => Ok(Some(stat.size.unwrap_or(0))),
            Ok(_) => Err(RemoteError::Refused {
                addr: self.addr.clone(),
                path: path.to_string(),
                reason: "is not a regular file".into(),
            }),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.sftp_err("checking", path, e)),
        }
    }

    /// Writes `bytes` to `path` atomically: `<path>.tmp` first, then a rename, so the
    /// other side never reads a half-written file. The file is not world-readable (mode
    /// 0640: the provider reads it through the site's group). Returns the written file's
    /// owner, as the provider sees it: this site's account.
    pub fn upload(&self, path: &str, bytes: &[u8]) -> Result<Owner, RemoteError> {
        let tmp = format!("{path}.tmp");
        let mut file = self
            .sftp
            .open_mode(
                Path::new(&tmp),
                ssh2::OpenFlags::WRITE | ssh2::OpenFlags::CREATE | ssh2::OpenFlags::TRUNCATE,
                0o640,
                ssh2::OpenType::File,
            )
            .map_err(|e| self.sftp_err("creating", &tmp, e))?;
        file.write_all(bytes).map_err(|e| RemoteError::Sftp {
            addr: self.addr.clone(),
            op: "writing",
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
        let owner = file
            .stat()
            .map(|st| Owner::of(&st))
            .map_err(|e| self.sftp_err("inspecting", &tmp, e))?;
        drop(file);
        // SFTP v3 servers do not overwrite on rename: clear the target first.
        self.remove(path)?;
        self.sftp
            .rename(Path::new(&tmp), Path::new(path), None)
            .map_err(|e| self.sftp_err("renaming into place", path, e))?;
        Ok(owner)
    }

    /// The owner and mode of a remote file or directory, not following a link; `None` if
    /// it does not exist.
    pub fn owner_of(&self, path: &str) -> Result<Option<Owner>, RemoteError> {
        match self.sftp.lstat(Path::new(path)) {
            Ok(st) => Ok(Some(Owner::of(&st))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.sftp_err("checking", path, e)),
        }
    }

    /// [`Remote::read_small`], with the owner and mode of the file read, as its open
    /// handle reports them (so they belong to the very file whose bytes were read).
    pub fn read_small_owned(
        &self,
        path: &str,
        max: u64,
    ) -> Result<Option<(Vec<u8>, Owner)>, RemoteError> {
        let Some(before) = self.owner_of(path)? else {
            return Ok(None);
        };
        if before.kind != Kind::File {
            return Err(RemoteError::Refused {
                addr: self.addr.clone(),
                path: path.to_string(),
                reason: "is not a regular file".into(),
            });
        }
        let mut file = match self.sftp.open(Path::new(path)) {
            Ok(f) => f,
            Err(e) if is_not_found(&e) => return Ok(None),
            // LIBSSH2_FX_PERMISSION_DENIED: not a file meant for this account.
            Err(e) if matches!(e.code(), ssh2::ErrorCode::SFTP(3)) => {
                return Err(RemoteError::Refused {
                    addr: self.addr.clone(),
                    path: path.to_string(),
                    reason:
                        "this site's account may not read it, so it was not written for this site"
                            .into(),
                })
            }
            Err(e) => return Err(self.sftp_err("opening", path, e)),
        };
        let owner = file
            .stat()
            .map(|st| Owner::of(&st))
            .map_err(|e| self.sftp_err("inspecting", path, e))?;
        if owner.size > max {
            return Err(RemoteError::Refused {
                addr: self.addr.clone(),
                path: path.to_string(),
                reason: format!("is {} bytes, more than the {max} allowed", owner.size),
            });
        }
        let bytes = self.read_open(&mut file, path, max)?;
        Ok(Some((bytes, owner)))
    }

    /// Removes a remote file; a missing file is not an error.
    pub fn remove(&self, path: &str) -> Result<(), RemoteError> {
        match self.sftp.unlink(Path::new(path)) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.sftp_err("removing", path, e)),
        }
    }

    /// host:port of the provider.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// What a remote file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// A remote file's owner, mode and size, as the provider reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Owner uid (`u32::MAX` when the server does not say).
    pub uid: u32,
    /// Permission bits (0 when the server does not say).
    pub mode: u32,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes.
    pub size: u64,
}

impl Owner {
    fn of(st: &ssh2::FileStat) -> Owner {
        let ft = st.file_type();
        Owner {
            uid: st.uid.unwrap_or(u32::MAX),
            mode: st.perm.unwrap_or(0) & 0o7777,
            kind: if ft.is_symlink() {
                Kind::Symlink
            } else if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File
            } else {
                Kind::Other
            },
            size: st.size.unwrap_or(0),
        }
    }
}

/// Whether an SFTP error means "no such file".
fn is_not_found(e: &ssh2::Error) -> bool {
    // LIBSSH2_FX_NO_SUCH_FILE
    matches!(e.code(), ssh2::ErrorCode::SFTP(2))
}

/// `<file>.part`: where a download lands before it is complete.
pub fn part_path(local: &Path) -> PathBuf {
    let mut s = local.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn check_host_key(session: &Session, cfg: &RemoteConfig, addr: &str) -> Result<(), RemoteError> {
    let (key, key_type) = session.host_key().ok_or_else(|| RemoteError::Connect {
        addr: addr.to_string(),
        reason: "the server sent no host key".into(),
    })?;
    let mut known = session.known_hosts().map_err(|e| RemoteError::Connect {
        addr: addr.to_string(),
        reason: format!("known_hosts support unavailable: {e}"),
    })?;
    if let Err(e) = known.read_file(&cfg.known_hosts, KnownHostFileKind::OpenSSH) {
        return Err(RemoteError::Connect {
            addr: addr.to_string(),
            reason: format!(
                "cannot read known_hosts file {}: {e}",
                cfg.known_hosts.display()
            ),
        });
    }
    match known.check_port(&cfg.host, cfg.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::NotFound => Err(RemoteError::UnknownHostKey {
            addr: addr.to_string(),
            key_type: format!("{key_type:?}"),
            known_hosts: cfg.known_hosts.clone(),
        }),
        CheckResult::Mismatch => Err(RemoteError::HostKeyChanged {
            addr: addr.to_string(),
            known_hosts: cfg.known_hosts.clone(),
        }),
        CheckResult::Failure => Err(RemoteError::Connect {
            addr: addr.to_string(),
            reason: format!(
                "checking the host key against {} failed",
                cfg.known_hosts.display()
            ),
        }),
    }
}
