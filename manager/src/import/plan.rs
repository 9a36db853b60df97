/*!
The import's plan: what was found ([`Facts`], gathered by [`super::gather`]), the
inconsistencies it holds ([`issues`], each with a short stable id the operator
acknowledges), and the plan as printed. Pure: nothing here reads or writes a file.
*/

use super::legacy::LegacyConfig;
use super::survey::Archives;
use slony_shared::counter::Counter;
use slony_shared::ident::{NodeName, QualifiedTable};
use std::fmt::Write as _;
use std::path::PathBuf;

/// Everything the import found, before deciding anything.
#[derive(Debug, Clone)]
pub struct Facts {
    /// `repserver.cfg`, read.
    pub legacy: LegacyConfig,
    /// `--state-dir`: the manager's `subscribers_dir`.
    pub state_dir: PathBuf,
    /// `--write-config`.
    pub write_config: PathBuf,
    /// `--password-env`, if given.
    pub password_env: Option<String>,
    /// The sites of the parser configuration, in its order.
    pub sites: Vec<SiteFacts>,
    /// Sites named only by a change's `<node>.new` line: a first subscription in progress.
    pub new_only: Vec<NodeName>,
    /// Files directly in `triggerdir`.
    pub leftovers: Vec<String>,
    /// slon's archive directory.
    pub slon: super::survey::SlonDir,
    /// The account the import runs as (`run` should run as it too).
    pub own_uid: u32,
}

/// One site as found.
#[derive(Debug, Clone)]
pub struct SiteFacts {
    /// The site.
    pub node: NodeName,
    /// Its line in the parser configuration.
    pub line: usize,
    /// Its `.lst`.
    pub lst: PathBuf,
    /// Its tables, from the `.lst`.
    pub tables: Vec<QualifiedTable>,
    /// The tables of the list that are in no Slony set of the cluster.
    pub not_in_set: Vec<QualifiedTable>,
    /// Its sequence list, as a subscription decides it.
    pub sequences: Vec<QualifiedTable>,
    /// What the provider's catalog said about the list (a table gone, say).
    pub notes: Vec<String>,
    /// Its archive directory; `None` when there is none.
    pub archives: Option<Archives>,
    /// What a change in progress left (paths, and the parser configuration's line).
    pub change: Vec<String>,
    /// Its account.
    pub account: AccountFacts,
}

/// A site's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    /// The login name.
    pub name: String,
    /// Given with `--account` (else: the node's name).
    pub given: bool,
    /// Its uid, or why it was not found.
    pub uid: Result<u32, String>,
}

impl SiteFacts {
    /// The last counter cut for the site (its newest archive), if it has any.
    pub fn cut_counter(&self) -> Option<Counter> {
        self.archives.as_ref().and_then(|a| a.newest)
    }
}

/// An inconsistency: the import refuses to write until it is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Short and stable: what `--acknowledge` takes.
    pub id: String,
    /// What was found and what the import does about it.
    pub text: String,
}

/// Whether the written config needs `allow_shared_account`: two sites with one account,
/// or a site with the manager's own.
pub fn shared_account(f: &Facts) -> bool {
    let uids: Vec<u32> = f
        .sites
        .iter()
        .filter_map(|s| s.account.uid.as_ref().ok().copied())
        .collect();
    let names: Vec<&str> = f.sites.iter().map(|s| s.account.name.as_str()).collect();
    uids.contains(&f.own_uid)
        || (1..uids.len()).any(|i| uids[..i].contains(&uids[i]))
        || (1..names.len()).any(|i| names[..i].contains(&names[i]))
}

/// Every inconsistency of `f`, in the plan's order.
pub fn issues(f: &Facts) -> Vec<Issue> {
    let mut out = Vec::new();
    let mut push = |id: String, text: String| out.push(Issue { id, text });
    if let Some(prep) = &f.legacy.prep_cfg {
        if *prep != f.legacy.parser_config {
            push(
                "prep-cfg".into(),
                format!(
                    "parse_slon_logs read its sites from kPSLprepCfg = {}, the subscription tools \
                     from parser_config = {}: the import takes parser_config",
                    prep.display(),
                    f.legacy.parser_config.display()
                ),
            );
        }
    }
    for s in &f.sites {
        let node = &s.node;
        for t in &s.not_in_set {
            push(
                format!("not-in-set/{node}/{t}"),
                format!(
                    "site {node}: {} names {t}, which is in no Slony set of cluster {}: it stays \
                     in the site's list, and nothing of it is in the archives",
                    s.lst.display(),
                    f.legacy.cluster
                ),
            );
        }
        match &s.archives {
            None => push(
                format!("no-dir/{node}"),
                format!(
                    "site {node}: parser_config line {} names {}/{node}, which does not exist: \
                     the site gets no cut_counter, and `run` does not cut for it until its last \
                     counter is written into {}",
                    s.line,
                    f.legacy.subscribers_dir.display(),
                    cut_counter_path(f, node)
                ),
            ),
            Some(a) => {
                if a.newest.is_none() {
                    push(
                        format!("no-archive/{node}"),
                        format!(
                            "site {node}: {}/{node} holds no archive: its position is unknown, so \
                             it gets no cut_counter, and `run` does not cut for it until its last \
                             counter is written into {}",
                            f.legacy.subscribers_dir.display(),
                            cut_counter_path(f, node)
                        ),
                    );
                }
                if !a.gaps.is_empty() {
                    push(
                        format!("gap/{node}"),
                        format!(
                            "site {node}: its archives are not contiguous, counters {} are \
                             missing: the site cannot apply past the first gap unless it already \
                             has those counters",
                            ranges(&a.gaps)
                        ),
                    );
                }
                if !a.odd.is_empty() {
                    push(
                        format!("odd-names/{node}"),
                        format!(
                            "site {node}: names that look like archives but are not: {} (left as \
                             they are, not counted)",
                            a.odd
                                .iter()
                                .map(|n| format!("{:?}", n))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
            }
        }
        if !s.change.is_empty() {
            push(
                format!("mid-change/{node}"),
                format!(
                    "site {node}: a change of its subscription was in progress ({}): the import \
                     takes its current list ({}); the change is abandoned and those files are \
                     left as they are. The site subscribes again to make it",
                    s.change.join(", "),
                    s.lst.display()
                ),
            );
        }
        if let (Some(cut), Some(oldest)) = (s.cut_counter(), f.slon.oldest_waiting) {
            if oldest > cut.next() {
                push(
                    format!("behind/{node}"),
                    format!(
                        "site {node}: `run` cuts {} next, but the oldest archive waiting in {} is \
                         {oldest}: the counters between are not there under their own names (the \
                         original parser renamed the ones it cut to .sql.parsed); the cutter stops \
                         for the site until they are",
                        cut.next(),
                        f.legacy.archive_dir.display()
                    ),
                );
            }
        }
        if let Err(why) = &s.account.uid {
            push(
                format!("no-account/{node}"),
                format!(
                    "site {node}: {why}: the written config does not load until it exists (or \
                     name the site's account with --account {node}=USER)"
                ),
            );
        }
    }
    for node in &f.new_only {
        push(
            format!("mid-change/{node}"),
            format!(
                "site {node}: only a change in progress names it ({node}.new): its first \
                 subscription never finished, so it is not imported; it subscribes afresh"
            ),
        );
    }
    if f.slon.parsed > 0 {
        push(
            "parsed-files".into(),
            format!(
                "{} holds {} archive(s) the original parser renamed .sql.parsed (the newest {}): \
                 the cutter takes no such name and warns about each on every pass; move them out \
                 (into kPSLarchiveDir, as archivelogs.pl did)",
                f.legacy.archive_dir.display(),
                f.slon.parsed,
                f.slon
                    .newest_parsed
                    .map_or_else(String::new, |c| c.to_string())
            ),
        );
    }
    for name in &f.leftovers {
        push(
            format!("trigger-file/{}", name.escape_debug()),
            format!(
                "{}/{} is a file of the original shared layout: `run` moves it into {}/rejected/ \
                 with an alert; remove it before starting `run` if it is stale",
                f.legacy.trigger_dir.display(),
                name.escape_debug(),
                f.legacy.trigger_dir.display()
            ),
        );
    }
    // The manager refuses shared accounts unless its operator opts in; so does the import.
    if shared_account(f) {
        push(
            "shared-account".into(),
            "several sites share an account, or a site's is the manager's own: the config \
             gets allow_shared_account = true, and then the manager cannot tell those sites' \
             files apart (each can act for the others). Give each site an account of its own \
             (--account NODE=USER), or acknowledge"
                .into(),
        );
    }
    out
}

fn cut_counter_path(f: &Facts, node: &NodeName) -> String {
    f.state_dir
        .join(node.as_str())
        .join(crate::cutter::CUT_COUNTER_FILE)
        .display()
        .to_string()
}

/// `6-9, 12` for the ranges.
fn ranges(r: &[(Counter, Counter)]) -> String {
    r.iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The acknowledgements that are missing, and those that name no issue.
///
/// # Errors
///
/// A message naming each unacknowledged issue (with its text) and each
/// acknowledgement that matches none.
pub fn check_acknowledged(issues: &[Issue], acknowledged: &[String]) -> Result<(), String> {
    let missing: Vec<&Issue> = issues
        .iter()
        .filter(|i| !acknowledged.contains(&i.id))
        .collect();
    let unknown: Vec<&String> = acknowledged
        .iter()
        .filter(|a| !issues.iter().any(|i| i.id == **a))
        .collect();
    if missing.is_empty() && unknown.is_empty() {
        return Ok(());
    }
    let mut m = String::new();
    if !missing.is_empty() {
        let _ = writeln!(
            m,
            "{} inconsistenc{} not acknowledged, nothing was written (see --dry-run; acknowledge each with --acknowledge ID):",
            missing.len(),
            if missing.len() == 1 { "y" } else { "ies" }
        );
        for i in &missing {
            let _ = writeln!(m, "  {}: {}", i.id, i.text);
        }
    }
    if !unknown.is_empty() {
        let _ = writeln!(
            m,
            "--acknowledge names no inconsistency of this plan, nothing was written: {}",
            unknown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Err(m.trim_end().to_string())
}

/// A list of names, or `(none)`.
fn list(items: &[QualifiedTable]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The plan as printed.
pub fn render(f: &Facts, issues: &[Issue]) -> String {
    let l = &f.legacy;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Import of the original provider set-up {}",
        l.path.display()
    );
    let row = |s: &mut String, key: &str, value: String, from: String| {
        let _ = writeln!(s, "  {key:<16} {value}  ({from})");
    };
    let line = |k: &str| format!("{k}, line {}", l.line_of(k));
    row(
        &mut s,
        "cluster",
        l.cluster.to_string(),
        line("CLUSTERNAME"),
    );
    row(
        &mut s,
        "database",
        format!(
            "host={} port={} dbname={} user={}",
            l.host, l.port, l.dbname, l.user
        ),
        "SLAVEHOST, SLAVEPORT, SLAVEDBNAME, REPUSER".into(),
    );
    row(
        &mut s,
        "trigger_dir",
        l.trigger_dir.display().to_string(),
        format!(
            "{}; `run` makes one directory per site in it",
            line("triggerdir")
        ),
    );
    row(
        &mut s,
        "site_log_dir",
        l.subscribers_dir.display().to_string(),
        format!(
            "{}: the sites' archives stay where they are",
            line("subscribers_dir")
        ),
    );
    row(
        &mut s,
        "archive_dir",
        l.archive_dir.display().to_string(),
        line("kPSLlogsSourceDir"),
    );
    let waiting = f.slon.oldest_waiting.map_or_else(
        || "none waiting".to_string(),
        |c| format!("oldest waiting {c}"),
    );
    let parsed = match f.slon.newest_parsed {
        Some(c) => format!("{} renamed .sql.parsed (newest {c})", f.slon.parsed),
        None => "none renamed .sql.parsed".to_string(),
    };
    let _ = writeln!(s, "  {:<16} {waiting}; {parsed}", "");
    row(
        &mut s,
        "subscribers_dir",
        f.state_dir.display().to_string(),
        "--state-dir: the manager's state of each site".into(),
    );
    row(
        &mut s,
        "config",
        f.write_config.display().to_string(),
        "--write-config".into(),
    );
    let _ = writeln!(
        s,
        "\nSites ({}, from {}):",
        f.sites.len(),
        l.parser_config.display()
    );
    for site in &f.sites {
        let _ = writeln!(s, "  {}", site.node);
        let _ = writeln!(
            s,
            "    tables        {}  ({})",
            list(&site.tables),
            site.lst.display()
        );
        let _ = writeln!(s, "    sequences     {}", list(&site.sequences));
        match &site.archives {
            None => {
                let _ = writeln!(s, "    archives      no directory");
            }
            Some(a) => {
                let span = match (a.first, a.newest) {
                    (Some(first), Some(newest)) => format!(
                        ", counters {first}-{newest}, {}",
                        if a.gaps.is_empty() {
                            "contiguous".to_string()
                        } else {
                            format!("missing {}", ranges(&a.gaps))
                        }
                    ),
                    _ => String::new(),
                };
                let _ = writeln!(
                    s,
                    "    archives      {} loose, {} batch{}{span}",
                    a.loose,
                    a.batches,
                    if a.batches == 1 { "" } else { "es" }
                );
            }
        }
        match site.cut_counter() {
            Some(c) => {
                let _ = writeln!(s, "    next counter  {}  (cut_counter {c})", c.next());
            }
            None => {
                let _ = writeln!(s, "    next counter  unknown  (no cut_counter written)");
            }
        }
        let _ = writeln!(
            s,
            "    account       {}  ({}{})",
            site.account.name,
            if site.account.given {
                "--account"
            } else {
                "the node's name; --account NODE=USER to change"
            },
            if site.account.uid.is_err() {
                "; no such account"
            } else {
                ""
            }
        );
        for n in &site.notes {
            let _ = writeln!(s, "    note          {n}");
        }
    }
    if issues.is_empty() {
        let _ = writeln!(s, "\nInconsistencies: none.");
    } else {
        let _ = writeln!(
            s,
            "\nInconsistencies ({}; the import writes nothing until each is acknowledged with --acknowledge ID):",
            issues.len()
        );
        for i in issues {
            let _ = writeln!(s, "  {}\n      {}", i.id, i.text);
        }
    }
    let _ = writeln!(s, "\nKeys of {} not imported:", l.path.display());
    for (group, keys) in &l.ignored {
        let _ = writeln!(s, "  {group}: {}", keys.join(", "));
    }
    s
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use slony_shared::config::shell;
    use std::path::Path;

    pub(crate) fn legacy() -> LegacyConfig {
        let text = "CLUSTERNAME=jsoc\nSLAVEDBNAME=provider\nSLAVEHOST=db\nSLAVEPORT=5433\nREPUSER=slony\n\
                    triggerdir=/srv/triggers\nsubscribers_dir=/srv/site_logs\nparser_config=/srv/etc/p.cfg\n\
                    tables_dir=/srv/etc\nkPSLlogsSourceDir=/srv/slon_logs\nkPSLprepCfg=/srv/etc/p.cfg\nkMSLogDir=/x\n";
        LegacyConfig::from_assignments(
            &shell::parse(Path::new("/srv/etc/repserver.cfg"), text).unwrap(),
        )
        .unwrap()
    }

    fn t(s: &str) -> QualifiedTable {
        QualifiedTable::parse(s).unwrap()
    }

    pub(crate) fn site(node: &str, newest: Option<u64>, uid: u32) -> SiteFacts {
        SiteFacts {
            node: NodeName::new(node).unwrap(),
            line: 1,
            lst: PathBuf::from(format!("/srv/etc/{node}.lst")),
            tables: vec![t("s1.t1")],
            not_in_set: vec![],
            sequences: vec![t("s1.seq1")],
            notes: vec![],
            archives: Some(Archives {
                loose: newest.map_or(0, |_| 1),
                first: newest.map(Counter),
                newest: newest.map(Counter),
                ..Archives::default()
            }),
            change: vec![],
            account: AccountFacts {
                name: node.into(),
                given: false,
                uid: Ok(uid),
            },
        }
    }

    pub(crate) fn facts(sites: Vec<SiteFacts>) -> Facts {
        Facts {
            legacy: legacy(),
            state_dir: PathBuf::from("/srv/state"),
            write_config: PathBuf::from("/etc/slony/manager.toml"),
            password_env: None,
            sites,
            new_only: vec![],
            leftovers: vec![],
            slon: Default::default(),
            own_uid: 0,
        }
    }

    fn ids(f: &Facts) -> Vec<String> {
        issues(f).into_iter().map(|i| i.id).collect()
    }

    #[test]
    fn a_clean_set_up_has_no_issue_and_a_plan_naming_everything() {
        let f = facts(vec![
            site("alpha", Some(20), 1001),
            site("beta", Some(20), 1002),
        ]);
        assert!(issues(&f).is_empty());
        assert!(!shared_account(&f));
        let text = render(&f, &[]);
        for needle in [
            "cluster          jsoc  (CLUSTERNAME, line 1)",
            "site_log_dir     /srv/site_logs",
            "subscribers_dir  /srv/state",
            "Sites (2, from /srv/etc/p.cfg):",
            "  alpha\n    tables        s1.t1  (/srv/etc/alpha.lst)\n    sequences     s1.seq1\n",
            "    next counter  21  (cut_counter 20)",
            "    account       alpha  (the node's name",
            "Inconsistencies: none.",
            "manage_slony (slon itself is not the manager's): kMSLogDir",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        assert!(check_acknowledged(&[], &[]).is_ok());
    }

    #[test]
    fn every_inconsistency_has_its_id() {
        let mut gap = site("alpha", Some(20), 1001);
        if let Some(a) = gap.archives.as_mut() {
            a.gaps = vec![(Counter(6), Counter(9)), (Counter(12), Counter(12))];
            a.odd = vec!["slony1_log_2_1.sql".into()];
        }
        gap.not_in_set = vec![t("s1.t9")];
        let mut none = site("beta", None, 1002);
        none.change = vec!["/srv/site_logs/beta.new".into()];
        let mut nodir = site("gamma", None, 1003);
        nodir.archives = None;
        nodir.account.uid = Err("there is no Unix account \"gamma\"".into());
        let mut f = facts(vec![gap, none, nodir]);
        f.new_only = vec![NodeName::new("delta").unwrap()];
        f.leftovers = vec!["beta.subscribe_series.tgr".into(), "odd\nname".into()];
        f.legacy.prep_cfg = Some(PathBuf::from("/elsewhere.cfg"));
        // alpha (cut up to 20) finds 22 the oldest archive waiting: 21 is gone.
        f.slon = crate::import::survey::SlonDir {
            oldest_waiting: Some(Counter(22)),
            newest_parsed: Some(Counter(20)),
            parsed: 3,
        };
        assert_eq!(
            ids(&f),
            vec![
                "prep-cfg",
                "not-in-set/alpha/s1.t9",
                "gap/alpha",
                "odd-names/alpha",
                "behind/alpha",
                "no-archive/beta",
                "mid-change/beta",
                "no-dir/gamma",
                "no-account/gamma",
                "mid-change/delta",
                "parsed-files",
                "trigger-file/beta.subscribe_series.tgr",
                "trigger-file/odd\\nname",
            ]
        );
        let all = issues(&f);
        let gap_text = &all.iter().find(|i| i.id == "gap/alpha").unwrap().text;
        assert!(
            gap_text.contains("counters 6-9, 12 are missing"),
            "{gap_text}"
        );
        let text = render(&f, &all);
        assert!(text.contains("next counter  unknown"), "{text}");
        assert!(text.contains("archives      no directory"), "{text}");
        assert!(text.contains("counters 20-20, missing 6-9, 12"), "{text}");

        // Each one must be acknowledged; an acknowledgement must name one.
        let mut acks: Vec<String> = all.iter().map(|i| i.id.clone()).collect();
        assert!(check_acknowledged(&all, &acks).is_ok());
        let last = acks.pop().unwrap();
        let e = check_acknowledged(&all, &acks).unwrap_err();
        assert!(e.contains(&last) && e.contains("1 inconsistency"), "{e}");
        acks.push(last);
        acks.push("gap/zeta".into());
        let e = check_acknowledged(&all, &acks).unwrap_err();
        assert!(
            e.contains("names no inconsistency") && e.contains("gap/zeta"),
            "{e}"
        );
    }

    #[test]
    fn shared_accounts_are_noticed() {
        let f = facts(vec![
            site("alpha", Some(1), 1001),
            site("beta", Some(1), 1001),
        ]);
        assert!(shared_account(&f));
        let f = facts(vec![site("alpha", Some(1), 0)]);
        assert!(shared_account(&f), "the manager's own account");
        let mut a = site("alpha", Some(1), 1001);
        let mut b = site("beta", Some(1), 1002);
        a.account.uid = Err("none".into());
        b.account.uid = Err("none".into());
        b.account.name = "alpha".into();
        assert!(shared_account(&facts(vec![a, b])), "same name, not found");
    }
}
