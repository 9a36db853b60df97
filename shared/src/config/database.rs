//! `[database]`: the PostgreSQL connection, the same section in the receiver's and the
//! manager's configuration.

use super::{invalid, ConfigError};
use serde::Deserialize;
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
}

/// A validated PostgreSQL connection.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// A libpq-style connection string or URL, as tokio-postgres parses it.
    pub conninfo: String,
    /// Password from the environment, if configured (kept out of `conninfo` for logging).
    pub password: Option<String>,
    /// Bound on connecting.
    pub connect_timeout: Duration,
}

impl DatabaseConfig {
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
                [
                    format!("host={}", quote(d.host.as_deref().unwrap_or("localhost"))),
                    format!("port={}", d.port.unwrap_or(5432)),
                    format!("user={}", quote(&user)),
                    format!("dbname={}", quote(&dbname)),
                ]
                .join(" ")
            }
        };
        if conninfo.parse::<tokio_postgres::Config>().is_err() {
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
}
