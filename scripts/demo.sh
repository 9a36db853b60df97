#!/usr/bin/env bash
# End-to-end demo of the whole system on one machine, with nothing to set up beforehand.
#
# In a throwaway directory it starts a private PostgreSQL and a private sshd on
# 127.0.0.1, and plays both sides:
#
#   the provider  database `provider` (tables app.events, app.counters and app.audit,
#                 in a Slony-I-like catalog "_demo" at archive 100), a slon-like
#                 archive directory, and `slony-manager run` serving it;
#   a new site    an empty database `site1` and `slony-receiver`, reaching the
#                 provider over SSH (keys generated for this run).
#
# The site subscribes to app.events and app.counters (`subscribe-series`), slon
# writes archives 101..120 touching all three tables, the manager cuts the site's
# stream (app.audit left out), `pull` applies it, and `status` shows both sides.
# Then 20 more archives and the lag, `guard on` refusing a local write while
# archives still apply, and `promote`. The manager is stopped with SIGTERM and both
# servers are stopped when the script ends, whether it succeeds or not.
#
# Run as root (as CI does), it first installs the Debian packages it needs when one
# is missing; as root PostgreSQL runs as the `postgres` user. It builds the two
# binaries into $CARGO_TARGET_DIR (default target/). The directory is deleted at the
# end unless DEMO_KEEP=1. At the end it prints how long it took, build apart.
#
# Usage: scripts/demo.sh            (DEMO_KEEP=1 scripts/demo.sh to keep it)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

CLUSTER=demo
NODE=site1
SNAPSHOT=100 # the provider's archive counter when the site subscribes
WAIT_TENTHS=300 # every wait below: at most 30 s

say() { printf '\n==> %s\n' "$*"; }
note() { printf '    >> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/servers.sh
source "$repo/scripts/lib/servers.sh"

# --- packages ---------------------------------------------------------------
packages=(openssh-server postgresql libssl-dev pkg-config libclang-dev)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done
if ((${#missing[@]} > 0)); then
    if is_root && command -v apt-get >/dev/null 2>&1; then
        say "installing missing packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "warning: missing Debian packages: ${missing[*]}" >&2
        echo "warning: run this script as root, or: sudo apt-get install ${missing[*]}" >&2
    fi
fi

command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs)"
[[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd not found (Debian package openssh-server)"
command -v ssh-keygen >/dev/null 2>&1 || die "ssh-keygen not found (Debian package openssh-client)"

find_pg_bin

# --- build --------------------------------------------------------------------
say "building slony-receiver and slony-manager"
build_start=$SECONDS
cargo build -p slony-receiver -p slony-manager
build_secs=$((SECONDS - build_start))
demo_start=$SECONDS
bin_dir="${CARGO_TARGET_DIR:-$repo/target}/debug"
receiver="$bin_dir/slony-receiver"
manager="$bin_dir/slony-manager"
[[ -x $receiver ]] || die "built binary not found at $receiver"
[[ -x $manager ]] || die "built binary not found at $manager"

# --- throwaway directory and clean-up -------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/slony-demo.XXXXXX")
chmod 0755 "$tmp"
manager_pid=

# Stops `slony-manager run` with SIGTERM (bounded wait, then SIGKILL); prints how it
# ended when $1 is "show".
stop_manager() {
    local rc
    [[ -n $manager_pid ]] || return 0
    if kill -0 "$manager_pid" 2>/dev/null; then
        kill -TERM "$manager_pid"
        wait_gone "$manager_pid" "$WAIT_TENTHS" || kill -KILL "$manager_pid"
    fi
    rc=0
    wait "$manager_pid" || rc=$?
    manager_pid=
    if [[ ${1:-} == show ]]; then
        echo "slony-manager run exit code: $rc"
    fi
}

cleanup() {
    local rc=$?
    set +e
    stop_manager
    if ((rc != 0)) && [[ -s $tmp/manager.log ]]; then
        printf '\n--- last lines of %s ---\n' "$tmp/manager.log" >&2
        tail -n 20 "$tmp/manager.log" >&2
    fi
    stop_servers "$tmp" "$rc"
    if [[ ${DEMO_KEEP:-0} == 1 ]]; then
        printf '\ndemo directory kept: %s\n' "$tmp"
    else
        rm -rf "$tmp"
        printf '\ndemo directory %s removed (DEMO_KEEP=1 keeps it)\n' "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for WHAT COMMAND...: runs COMMAND every 0.1 s until it succeeds, at most 30 s.
wait_for() {
    local what=$1 tries=$WAIT_TENTHS
    shift
    until "$@"; do
        ((tries-- > 0)) || die "gave up after 30 s waiting for $what"
        if [[ -n $manager_pid ]] && ! kill -0 "$manager_pid" 2>/dev/null; then
            die "slony-manager run exited while waiting for $what (see $tmp/manager.log)"
        fi
        sleep 0.1
    done
}

# q DB SQL: one value, unaligned.
q() { psql -d "$1" -tA -c "$2"; }

# expect WHAT GOT WANT: stops the demo if the product did not do what it shows.
expect() {
    [[ $2 == "$3" ]] || die "$1: expected $3, got $2"
}

# --- PostgreSQL: the provider's database and the new site's ------------------------
say "starting a private PostgreSQL ($PG_BIN) in $tmp"
start_postgres "$tmp" -c fsync=off -c full_page_writes=off -c synchronous_commit=off
echo "PostgreSQL pid $pg_pid listening on 127.0.0.1:$pg_port"

say "the provider's database: app.events, app.counters, app.audit, and Slony's catalog \"_$CLUSTER\""
psql -d postgres -c 'CREATE DATABASE provider' -c 'CREATE DATABASE site1'
psql -d provider <<EOF
CREATE SCHEMA app;
CREATE TABLE app.events (id int PRIMARY KEY, note text NOT NULL);
CREATE TABLE app.counters (name text PRIMARY KEY, value int NOT NULL);
CREATE TABLE app.audit (id int PRIMARY KEY, who text NOT NULL);
INSERT INTO app.events SELECT g, 'event ' || g FROM generate_series(1, $SNAPSHOT) g;
INSERT INTO app.counters VALUES ('hits', $SNAPSHOT);
INSERT INTO app.audit SELECT g, 'batch job' FROM generate_series(1, $SNAPSHOT) g;
-- What a Slony-I node holds and the manager reads: the log-shipping counter (slon
-- advances it with every archive) and the set's tables and sequences.
CREATE SCHEMA "_$CLUSTER";
CREATE TABLE "_$CLUSTER".sl_archive_counter (ac_num bigint, ac_timestamp timestamptz);
INSERT INTO "_$CLUSTER".sl_archive_counter VALUES ($SNAPSHOT, now());
CREATE TABLE "_$CLUSTER".sl_table (tab_id serial, tab_reloid oid, tab_relname name,
    tab_nspname name, tab_set int);
INSERT INTO "_$CLUSTER".sl_table (tab_reloid, tab_relname, tab_nspname, tab_set)
    SELECT c.oid, c.relname, n.nspname, 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'app' AND c.relkind = 'r' ORDER BY c.relname;
CREATE TABLE "_$CLUSTER".sl_sequence (seq_id serial, seq_reloid oid UNIQUE NOT NULL,
    seq_relname name NOT NULL, seq_nspname name NOT NULL, seq_set int, seq_comment text);
EOF
psql -d provider -c "SELECT (SELECT count(*) FROM app.events) AS events,
    (SELECT value FROM app.counters WHERE name = 'hits') AS hits,
    (SELECT count(*) FROM app.audit) AS audit,
    (SELECT ac_num FROM \"_$CLUSTER\".sl_archive_counter) AS archive_counter"
note "the provider is at archive $SNAPSHOT: 100 events, the counter 'hits' at 100; database site1 is empty"

# --- sshd: how the site reaches the provider --------------------------------------
say "starting a private sshd on 127.0.0.1 (keys generated for this run)"
start_sshd "$tmp" slony-demo "LogLevel VERBOSE"
echo "sshd pid $sshd_pid listening on 127.0.0.1:$ssh_port"

# --- slon's archive directory ------------------------------------------------------
provider="$tmp/provider"
archive_dir="$provider/archive"
mkdir -p "$provider/triggers" "$provider/subscribers" "$provider/site_logs" "$archive_dir"
chmod 0755 "$provider" "$provider/triggers"
dashes=------------------------------------------------------------------
archive_name() { printf 'slony1_log_2_%020d.sql' "$1"; }
# write_archives FROM TO: archives FROM..TO into slon's archive directory as slon
# writes them (a .tmp, then a rename). Archive n inserts event n, sets the counter
# 'hits' to n and inserts audit row n.
write_archives() {
    local n created name
    for ((n = $1; n <= $2; n++)); do
        created=$(date -u '+%Y-%m-%d %H:%M:%S+00')
        name=$(archive_name "$n")
        {
            echo "$dashes"
            echo "-- Slony-I log shipping archive"
            echo "-- Node 1, Event 50000000$n"
            echo "$dashes"
            echo "set session_replication_role to replica;"
            echo "start transaction;"
            echo "select \"_$CLUSTER\".archiveTracking_offline('$n', '$created');"
            echo "-- end of log archiving header"
            echo "$dashes"
            echo "-- start of Slony-I data"
            echo "$dashes"
            echo "COPY \"_$CLUSTER\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;"
            printf '1\t%s\t2\t%s\tapp\tevents\tI\t0\t{id,%s,note,"event %s"}\n' $((7000 + n)) $((3 * n)) "$n" "$n"
            printf '1\t%s\t1\t%s\tapp\tcounters\tU\t1\t{value,%s,name,hits}\n' $((7000 + n)) $((3 * n + 1)) "$n"
            printf '1\t%s\t3\t%s\tapp\taudit\tI\t0\t{id,%s,who,"batch job"}\n' $((7000 + n)) $((3 * n + 2)) "$n"
            echo '\.'
            echo "$dashes"
            echo "-- End Of Archive Log"
            echo "$dashes"
            echo "commit;"
            echo "vacuum analyze \"_$CLUSTER\".sl_archive_tracking;"
        } >"$archive_dir/$name.tmp"
        mv "$archive_dir/$name.tmp" "$archive_dir/$name"
    done
}
# slon_writes FROM TO: the provider's transactions FROM..TO, and slon archiving them.
slon_writes() {
    psql -d provider <<EOF
INSERT INTO app.events SELECT g, 'event ' || g FROM generate_series($1, $2) g;
UPDATE app.counters SET value = $2 WHERE name = 'hits';
INSERT INTO app.audit SELECT g, 'batch job' FROM generate_series($1, $2) g;
UPDATE "_$CLUSTER".sl_archive_counter SET ac_num = $2, ac_timestamp = now();
EOF
    write_archives "$1" "$2"
    echo "$archive_dir/: $(archive_name "$1") ... $(archive_name "$2")"
}
say "slon's archive directory: archives 1..$SNAPSHOT, written before the site existed"
write_archives 1 "$SNAPSHOT"
echo "$archive_dir/: $(find "$archive_dir" -name '*.sql' | wc -l) archives"

# --- the manager ---------------------------------------------------------------------
account=$(id -un)
cat >"$tmp/manager.toml" <<EOF
# slony-manager configuration for this demo (every key: etc/manager.toml.example).
cluster = "$CLUSTER"
trigger_dir = "$provider/triggers"
subscribers_dir = "$provider/subscribers"
site_log_dir = "$provider/site_logs"
archive_dir = "$archive_dir"
rescan_interval_secs = 1
# A real provider gives each site a Unix account of its own; this demo plays the
# provider and the site as one user ($account).
allow_shared_account = true

[sites.$NODE]
account = "$account"

[database]
host = "127.0.0.1"
port = $pg_port
user = "postgres"
dbname = "provider"
EOF
say "provider side: $tmp/manager.toml"
cat "$tmp/manager.toml"

say "starting the provider's daemon: slony-manager run --config $tmp/manager.toml (log: $tmp/manager.log)"
"$manager" run --config "$tmp/manager.toml" </dev/null >/dev/null 2>"$tmp/manager.log" &
manager_pid=$!
wait_for "the manager to make the site's exchange directory" test -d "$provider/triggers/$NODE"
echo "slony-manager pid $manager_pid"
note "it made $provider/triggers/$NODE/, where site $NODE (and only it) talks to the provider"

# --- the new site ----------------------------------------------------------------------
cat >"$tmp/receiver.toml" <<EOF
# slony-receiver configuration for this demo (every key: etc/receiver.toml.example).
cluster = "$CLUSTER"
node = "$NODE"

[remote]
host = "127.0.0.1"
port = $ssh_port
user = "$ssh_user"
key_file = "$tmp/ssh/client_key"
known_hosts = "$tmp/ssh/known_hosts"
log_dir = "$provider/site_logs"
trigger_dir = "$provider/triggers"
# The manager runs as the account this site logs in as (see manager.toml).
allow_shared_account = true

[local]
log_dir = "$tmp/site"

[database]
host = "127.0.0.1"
port = $pg_port
# An ordinary role, made below: what the provider sends runs with its rights only.
user = "slony_apply"
dbname = "site1"

[alert]
recipients = []
EOF
say "site side: $tmp/receiver.toml"
cat "$tmp/receiver.toml"

# The site's DBA sets up the role that applies, once, with a copy of the config that
# connects as a superuser.
sed 's/^user = "slony_apply"$/user = "postgres"/' "$tmp/receiver.toml" >"$tmp/dba.toml"
say "the site's DBA makes the role that applies: slony-receiver init --config $tmp/dba.toml --apply-role slony_apply --no-schema"
"$receiver" init --config "$tmp/dba.toml" --apply-role slony_apply --no-schema
note "site1 is still empty; from here on the site works as slony_apply, an ordinary role"

printf '%s\n' "# the tables site $NODE wants" "app.events subscribe" "app.counters subscribe" >"$tmp/tables.list"
say "the site subscribes: slony-receiver subscribe-series --config $tmp/receiver.toml --list $tmp/tables.list"
cat "$tmp/tables.list"
"$receiver" subscribe-series --config "$tmp/receiver.toml" --list "$tmp/tables.list" \
    --attempts 30 --interval-secs 1 || die "subscribe-series failed (exit $?)"
psql -d site1 -c "SELECT (SELECT count(*) FROM app.events) AS events,
    (SELECT value FROM app.counters WHERE name = 'hits') AS hits,
    to_regclass('app.audit') AS audit,
    (SELECT at_counter FROM \"_$CLUSTER\".sl_archive_tracking) AS at_counter"
expect "events at the snapshot" "$(q site1 'SELECT count(*) FROM app.events')" "$SNAPSHOT"
expect "app.audit on the site" "$(q site1 "SELECT to_regclass('app.audit') IS NULL")" t
note "site1 now holds the two tables as the provider's snapshot had them (100 events, hits = 100),"
note "starts at archive $SNAPSHOT, and has no app.audit: it did not ask for it"
echo "what the manager did (from $tmp/manager.log):"
grep -E 'request|subscription SQL|SQL published|answered|subscription changed' "$tmp/manager.log" |
    sed -E 's/^[^ ]+ +[A-Z]+ +/    /'
echo "its table list for $NODE ($provider/subscribers/$NODE/tables):"
sed 's/^/    /' "$provider/subscribers/$NODE/tables"
note "the manager took one snapshot of the provider at archive $SNAPSHOT, sent it, and waited for the site's answer"

# --- slon goes on; the manager cuts the site's stream ---------------------------------
say "the provider goes on: 20 transactions, and slon archives them (each touches all three tables)"
slon_writes $((SNAPSHOT + 1)) 120
site_dir="$provider/site_logs/$NODE"
cut_counter_is() { [[ $(cat "$provider/subscribers/$NODE/cut_counter" 2>/dev/null) == "$1" ]]; }
wait_for "the manager to cut archive 120 for $NODE" cut_counter_is 120
say "the manager cut them for $NODE into $site_dir/"
echo "$(find "$site_dir" -name '*.sql' | wc -l) archives: $(find "$site_dir" -name '*.sql' -printf '%f\n' | sort | sed -n '1p;$p' | paste -sd ' ' | sed 's/ / ... /')"
rows() { awk -F'\t' 'NF == 9 { printf "    %s.%s %s %s\n", $5, $6, $7, $9 }' "$1"; }
echo "rows of archive 101 in slon's directory:"
rows "$archive_dir/$(archive_name 101)"
echo "rows of the site's copy:"
rows "$site_dir/$(archive_name 101)"
note "the site's copy keeps the envelope and the rows of app.events and app.counters; app.audit's row is gone"
note "archives 1..$SNAPSHOT were not copied: the snapshot already holds them"

# --- pull --------------------------------------------------------------------------------
say "the site pulls: slony-receiver pull --config $tmp/receiver.toml --once"
"$receiver" pull --config "$tmp/receiver.toml" --once || die "pull failed (exit $?)"
psql -d site1 -c "SELECT (SELECT count(*) FROM app.events) AS events,
    (SELECT value FROM app.counters WHERE name = 'hits') AS hits,
    to_regclass('app.audit') AS audit,
    (SELECT at_counter FROM \"_$CLUSTER\".sl_archive_tracking) AS at_counter"
expect "the counter after pull" "$(q site1 "SELECT value FROM app.counters WHERE name = 'hits'")" 120
note "the counter is now 120 and there are 120 events; app.audit still does not exist here"
say "compared with the provider: slony-receiver verify --reference <provider> --tables app.events,app.counters"
"$receiver" verify --config "$tmp/receiver.toml" \
    --reference "host=127.0.0.1 port=$pg_port user=postgres dbname=provider" \
    --tables app.events,app.counters || die "verify found a difference (exit $?)"
note "both tables are the same on the site and on the provider"

# --- status on both sides -------------------------------------------------------------
say "site side: slony-receiver status --config $tmp/receiver.toml"
"$receiver" status --config "$tmp/receiver.toml" || echo "status exit code: $?"
note "counter 120, the provider's newest 120: no lag"
# pull acknowledges what it applied into the site's exchange directory.
acked_is() { [[ $(cat "$provider/triggers/$NODE/applied_counter" 2>/dev/null) == "$1" ]]; }
wait_for "the site's acknowledgement of 120" acked_is 120
say "provider side: slony-manager status --config $tmp/manager.toml"
"$manager" status --config "$tmp/manager.toml" || echo "status exit code: $?"
note "site $NODE: its two tables, cut up to 120, and acknowledged 120 (what housekeeping may delete)"

# --- day-to-day operation ------------------------------------------------------------------
say "the provider goes on to 140; slony-receiver status shows the lag"
slon_writes 121 140
wait_for "the manager to cut archive 140 for $NODE" cut_counter_is 140
set +e
"$receiver" status --config "$tmp/receiver.toml"
echo "status exit code: $? (0 healthy, 20 when the lag passes [status] thresholds)"
set -e
note "the site is 20 archives behind until its next pull"

say "guarding the replica: slony-receiver guard --config $tmp/receiver.toml on"
"$receiver" guard --config "$tmp/receiver.toml" on
note "subscribe-series had guarded both tables already; guard on only repairs what is missing"
say "a local write to a replicated table is refused:"
if psql -d site1 -c "UPDATE app.counters SET value = 0 WHERE name = 'hits'"; then
    die "the guard let a local write through"
fi
say "while archives still apply: slony-receiver pull --once"
"$receiver" pull --config "$tmp/receiver.toml" --once || die "pull failed (exit $?)"
expect "the counter after the guarded pull" "$(q site1 "SELECT value FROM app.counters WHERE name = 'hits'")" 140
"$receiver" status --config "$tmp/receiver.toml"
note "the counter is 140: the guard stops local sessions, never the archives"

say "promoting the replica to a standalone database: slony-receiver promote --config $tmp/receiver.toml"
"$receiver" promote --config "$tmp/receiver.toml"
say "writes succeed now:"
psql -d site1 -c "UPDATE app.counters SET value = 0 WHERE name = 'hits' RETURNING name, value"
say "and pull refuses to run (exit 22):"
set +e
"$receiver" pull --config "$tmp/receiver.toml" --once
pull_rc=$?
set -e
echo "slony-receiver exit code: $pull_rc"
expect "pull after promote" "$pull_rc" 22

say "stopping the provider's daemon (SIGTERM)"
stop_manager show

say "done: a new site subscribed to 2 of the provider's 3 tables, received only them, and was promoted"
printf 'demo took %s s (build %s s)\n' $((SECONDS - demo_start)) "$build_secs"
