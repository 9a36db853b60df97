//! The original client config: `key=value` lines (kRSServer, kRSPort, kRSUser,
//! rmt_slony_dir, slony_logs, pg_host, pg_port, pg_user, pg_dbname, slony_cluster, node,
//! ingestion_path, email_list), read into the same raw struct as the TOML file.
//!
//! The file is never sourced by a shell: values are taken literally (surrounding quotes
//! removed), and unknown keys are refused so a typo does not go unnoticed.

use super::raw::RawReceiver;
use slony_shared::config::ConfigError;
use std::path::{Path, PathBuf};

/// Keys the original format has and we do not need (they configure tools we replace).
const IGNORED: &[&str] = &[
    "PSQL",
    "scp_cmd",
    "ssh_cmd",
    "pg_schema",
    "attempts",
    "webdb_ip",
    "webdb_dir",
    "webdb_user",
];

pub(super) fn parse(path: &Path, text: &str) -> Result<RawReceiver, ConfigError> {
    let mut raw = RawReceiver::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |message: String| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: format!("line {}: {message}", i + 1),
        };
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| syntax(format!("expected key=value, found {line:?}")))?;
        let key = key.trim();
        let value = unquote(value.trim());
        let port = |v: &str| {
            v.parse::<u16>()
                .map_err(|_| syntax(format!("{key}: {v:?} is not a port number")))
        };
        match key {
            "kRSServer" => raw.remote.host = Some(value.into()),
            "kRSPort" => raw.remote.port = Some(port(value)?),
            "kRSUser" => raw.remote.user = Some(value.into()),
            "rmt_slony_dir" => raw.remote.log_dir = Some(value.into()),
            "slony_logs" => raw.local.log_dir = Some(PathBuf::from(value)),
            "pg_host" => raw.database.host = Some(value.into()),
            "pg_port" => raw.database.port = Some(port(value)?),
            "pg_user" => raw.database.user = Some(value.into()),
            "pg_dbname" => raw.database.dbname = Some(value.into()),
            "slony_cluster" => raw.cluster = Some(value.into()),
            "node" => raw.node = Some(value.into()),
            "ingestion_path" => raw.local.die_dir = Some(PathBuf::from(value)),
            "email_list" => {
                raw.alert.recipients = Some(
                    value
                        .split([',', ' ', ';'])
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            }
            k if IGNORED.contains(&k) => {}
            other => return Err(syntax(format!("unknown key {other:?}"))),
        }
    }
    // The original tools authenticated through the user's ssh-agent.
    raw.remote.use_agent = Some(true);
    Ok(raw)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use crate::config::{ReceiverConfig, SshAuth};

    #[test]
    fn reads_the_original_client_config() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.cfg");
        std::fs::write(
            &p,
            "# client config\nkRSServer=solarport.stanford.edu\nkRSPort=55000\nkRSUser=igor\n\
             rmt_slony_dir=/scr21/slony_logs\nslony_logs=/home/slony/logs\npg_host=localhost\n\
             pg_port=5432\npg_user=slony\npg_dbname=jsoc\nslony_cluster=mdi_mag\nnode=nso\n\
             ingestion_path=/home/slony/bin\nemail_list='a@x.org, b@y.org'\n",
        )
        .unwrap();
        let c = ReceiverConfig::load_legacy(&p).unwrap();
        assert_eq!(c.remote.host, "solarport.stanford.edu");
        assert_eq!(c.remote.port, 55000);
        assert_eq!(c.remote.auth, SshAuth::Agent);
        assert_eq!(c.remote_site_dir(), "/scr21/slony_logs/nso");
        assert_eq!(c.cluster.as_str(), "mdi_mag");
        assert_eq!(c.alert.recipients, vec!["a@x.org", "b@y.org"]);
        assert_eq!(
            c.die_file(),
            std::path::PathBuf::from("/home/slony/bin/get_slony_logs.nso.die")
        );
    }

    #[test]
    fn refuses_unknown_keys_and_bad_ports() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("client.cfg");
        std::fs::write(&p, "kRSPrt=1\n").unwrap();
        assert!(ReceiverConfig::load_legacy(&p)
            .unwrap_err()
            .to_string()
            .contains("line 1"));
        std::fs::write(&p, "kRSPort=$(rm -rf /)\n").unwrap();
        assert!(ReceiverConfig::load_legacy(&p)
            .unwrap_err()
            .to_string()
            .contains("port"));
    }
}
