/*!
The sites this provider serves, and how a file is shown to come from each of them.

Each site logs in over SSH as a Unix account of its own (`[sites.<node>] account` in the
manager's config). Everything a site writes on the provider lands in its exchange
directory, `<trigger_dir>/<node>/`, which the manager owns and shares with that site's
group only (mode 3770); the site's archives are in `<site_log_dir>/<node>/` (2750, the
same group). A file is the site's when it is a plain file with one link, owned by the
site's account, in the site's own directory: an account cannot make a file owned by
another, and no other site can enter the directory. A name inside a file proves nothing.

A layout where several sites share one account (or the manager's own) cannot tell them
apart, so it is refused unless the operator opts in with `allow_shared_account = true`;
`status` then warns about it on every run.
*/

use nix::unistd::{Gid, Group, Uid, User};
use slony_shared::ident::{NodeName, QualifiedTable};
use std::collections::BTreeMap;

/// A Unix account, as the user database names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id: the group the site's directories are shared with.
    pub gid: u32,
}

impl Account {
    /// Looks up a login name.
    ///
    /// # Errors
    ///
    /// No such account, or the user database cannot be read.
    pub fn by_name(name: &str) -> Result<Account, String> {
        match User::from_name(name) {
            Ok(Some(u)) => Ok(Account {
                name: u.name,
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(format!("there is no Unix account {name:?} on this host")),
            Err(e) => Err(format!("looking up the account {name:?}: {e}")),
        }
    }

    /// The account the manager runs as.
    pub fn own() -> Account {
        let uid = Uid::effective();
        match User::from_uid(uid) {
            Ok(Some(u)) => Account {
                name: u.name,
                uid: uid.as_raw(),
                gid: Gid::effective().as_raw(),
            },
            _ => Account {
                name: format!("uid {uid}"),
                uid: uid.as_raw(),
                gid: Gid::effective().as_raw(),
            },
        }
    }
}

/// Names a uid for messages: `uid 1002 (site2)`, naming the registered site it belongs
/// to when there is one.
pub fn describe_uid(uid: u32, registry: Option<&Registry>) -> String {
    let name = match User::from_uid(Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("uid {uid} ({})", u.name),
        _ => format!("uid {uid} (no account)"),
    };
    let sites: Vec<String> = registry
        .map(|r| {
            r.sites
                .values()
                .filter(|s| s.account.uid == uid)
                .map(|s| s.node.to_string())
                .collect()
        })
        .unwrap_or_default();
    if uid == Account::own().uid {
        format!("{name}, the manager itself")
    } else if sites.is_empty() {
        name
    } else {
        format!("{name}, the account of site {}", sites.join(", "))
    }
}

/// A `tables` entry of a site: `schema.table`, or `schema.*` for every table of a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: String,
    table: Option<String>,
}

impl TablePattern {
    /// Parses `schema.table` or `schema.*`.
    pub fn parse(s: &str) -> Result<TablePattern, String> {
        if let Some(schema) = s.strip_suffix(".*") {
            // Read as a table name would be, with a stand-in table (so a quoted schema
            // is taken as PostgreSQL spells it).
            let t = QualifiedTable::parse(&format!("{schema}.x")).map_err(|e| e.to_string())?;
            return Ok(TablePattern {
                schema: t.schema,
                table: None,
            });
        }
        let t = QualifiedTable::parse(s).map_err(|e| e.to_string())?;
        Ok(TablePattern {
            schema: t.schema,
            table: Some(t.table),
        })
    }

    /// Whether `t` matches.
    pub fn matches(&self, t: &QualifiedTable) -> bool {
        self.schema == t.schema && self.table.as_ref().is_none_or(|n| *n == t.table)
    }
}

/// One registered site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteAccount {
    /// Its node name.
    pub node: NodeName,
    /// The account it logs in as.
    pub account: Account,
    /// The tables it may subscribe to, within the cluster's sets (`None`: all of them).
    pub tables: Option<Vec<TablePattern>>,
}

impl SiteAccount {
    /// Whether the site may subscribe to `t` (the Slony set is checked separately).
    pub fn may_have(&self, t: &QualifiedTable) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|p| p.iter().any(|p| p.matches(t)))
    }
}

/// Every registered site, by node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    /// The sites.
    pub sites: BTreeMap<NodeName, SiteAccount>,
    /// Whether the operator accepted accounts shared between sites (or with the manager).
    pub shared_allowed: bool,
}

impl Registry {
    /// The site registered as `node`.
    pub fn get(&self, node: &NodeName) -> Option<&SiteAccount> {
        self.sites.get(node)
    }

    /// Accounts that more than one party uses: `(account, sites)`, where the manager's
    /// own account counts as a party. Empty in a sound layout.
    pub fn shared_accounts(&self) -> Vec<(String, Vec<String>)> {
        let own = Account::own();
        let mut by_uid: BTreeMap<u32, (String, Vec<String>)> = BTreeMap::new();
        for s in self.sites.values() {
            let e = by_uid
                .entry(s.account.uid)
                .or_insert_with(|| (s.account.name.clone(), Vec::new()));
            e.1.push(s.node.to_string());
        }
        by_uid
            .into_iter()
            .filter(|(uid, (_, sites))| sites.len() > 1 || *uid == own.uid)
            .map(|(uid, (name, mut sites))| {
                if uid == own.uid {
                    sites.push("the manager".into());
                }
                (name, sites)
            })
            .collect()
    }

    /// What makes one site's directories reachable by another party, site by site:
    /// another registered site's account in its group, or the manager not in it (then
    /// the manager cannot read what the site writes). Empty in a sound layout.
    pub fn group_problems(&self) -> Vec<String> {
        let own = Account::own();
        let own_groups: Vec<u32> = nix::unistd::getgroups()
            .map(|g| g.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for s in self.sites.values() {
            let gid = s.account.gid;
            let group = Group::from_gid(Gid::from_raw(gid)).ok().flatten();
            let gname = group
                .as_ref()
                .map_or_else(|| format!("gid {gid}"), |g| g.name.clone());
            if gid != own.gid && !own_groups.contains(&gid) && own.uid != 0 {
                out.push(format!(
                    "site {}: the manager's account {} is not in the site's group {gname}, so it cannot read what the site writes (usermod -aG {gname} {}, then restart the manager)",
                    s.node, own.name, own.name
                ));
            }
            if self.shared_allowed {
                continue;
            }
            if s.account.uid == 0 {
                out.push(format!(
                    "site {}: its account {} is root, which can write as anyone",
                    s.node, s.account.name
                ));
            }
            if gid == own.gid {
                out.push(format!(
                    "site {}: its group {gname} is the manager's own group, which would let it read the manager's state (give the site a group of its own)",
                    s.node
                ));
            }
            let members: Vec<String> = group.map(|g| g.mem).unwrap_or_default();
            for m in &members {
                if *m != s.account.name && *m != own.name {
                    out.push(format!(
                        "site {}: its group {gname} also has the member {m}, who could then read and change the site's files (the group must hold the site's account and the manager's only)",
                        s.node
                    ));
                }
            }
            for other in self.sites.values() {
                if other.account.uid == s.account.uid {
                    continue;
                }
                if other.account.gid == gid {
                    out.push(format!(
                        "site {}: its group {gname} also admits site {}'s account {}, which could then read and write its files (give each site a group of its own)",
                        s.node, other.node, other.account.name
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> QualifiedTable {
        QualifiedTable::parse(s).unwrap()
    }

    #[test]
    fn table_patterns() {
        let all = TablePattern::parse("s1.*").unwrap();
        let one = TablePattern::parse("s2.t1").unwrap();
        assert!(all.matches(&t("s1.anything")));
        assert!(!all.matches(&t("s2.t1")));
        assert!(one.matches(&t("s2.t1")));
        let quoted = TablePattern::parse("\"Schema.name\".*").unwrap();
        assert!(quoted.matches(&t("\"Schema.name\".\"Capital Idea\"")));
        assert!(!one.matches(&t("s2.t2")));
        for bad in ["*", "s1", "s1.*.*", "../x.*", "s1.t\"1", ".*"] {
            assert!(TablePattern::parse(bad).is_err(), "{bad}");
        }
        let site = SiteAccount {
            node: NodeName::new("site1").unwrap(),
            account: Account::own(),
            tables: Some(vec![all, one]),
        };
        assert!(site.may_have(&t("s1.t9")));
        assert!(!site.may_have(&t("s3.t1")));
        let open = SiteAccount {
            tables: None,
            ..site
        };
        assert!(open.may_have(&t("s3.t1")));
    }

    #[test]
    fn accounts_and_sharing() {
        let own = Account::own();
        assert_eq!(Account::by_name(&own.name).unwrap().uid, own.uid);
        assert!(Account::by_name("no-such-account-xyz").is_err());
        assert!(describe_uid(own.uid, None).contains("the manager itself"));
        let mut r = Registry::default();
        for n in ["a", "b"] {
            let node = NodeName::new(n).unwrap();
            r.sites.insert(
                node.clone(),
                SiteAccount {
                    node,
                    account: own.clone(),
                    tables: None,
                },
            );
        }
        let shared = r.shared_accounts();
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].1, vec!["a", "b", "the manager"]);
        assert!(describe_uid(own.uid, Some(&r)).contains("the manager itself"));
    }
}
