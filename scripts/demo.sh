#!/usr/bin/env bash
# End-to-end demo of `slony-receiver pull`, with nothing to set up beforehand.
#
# In a throwaway directory it starts a private PostgreSQL (the replica) and a
# private sshd on 127.0.0.1 (the provider), writes 300 Slony-I 2.2 log-shipping
# archives into the provider's site directory, runs
#
#     slony-receiver pull --config <tmp>/receiver.toml --once
#
# once, and shows what it did: the replica's archive counter, the replicated
# rows, and the counter file. Then a day in the life of the site: 20 more
# archives and `status` showing the lag, `guard on` refusing a local write
# while archives still apply, and `promote` turning the replica into a
# standalone database that `pull` no longer touches. Both servers are stopped
# when the script ends, whether it succeeds or not.
#
# Run as root (as CI does), it first installs the Debian packages it needs
# when one is missing. The directory is deleted at the end unless DEMO_KEEP=1.
#
# Usage: scripts/demo.sh            (DEMO_KEEP=1 scripts/demo.sh to keep it)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

ARCHIVES=300
CLUSTER=demo
NODE=demo-site

say() { printf '\n==> %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/lib/servers.sh
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
say "building slony-receiver"
cargo build -p slony-receiver
receiver="${CARGO_TARGET_DIR:-$repo/target}/debug/slony-receiver"
[[ -x $receiver ]] || die "built binary not found at $receiver"

# --- throwaway directory and clean-up -------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/slony-demo.XXXXXX")
chmod 0755 "$tmp"

cleanup() {
    local rc=$?
    set +e
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

# --- PostgreSQL (the replica) -------------------------------------------------------
say "starting a private PostgreSQL ($PG_BIN) in $tmp"
start_postgres "$tmp" -c fsync=off -c full_page_writes=off -c synchronous_commit=off
echo "PostgreSQL pid $pg_pid listening on 127.0.0.1:$pg_port"

say "creating database replica with a user table s1.t1"
psql -d postgres -c 'CREATE DATABASE replica'
psql -d replica -c 'CREATE SCHEMA s1; CREATE TABLE s1.t1 (id int PRIMARY KEY, txt text);'

# --- sshd (the provider) -------------------------------------------------------------
say "starting a private sshd on 127.0.0.1"
start_sshd "$tmp" slony-demo "LogLevel VERBOSE"
echo "sshd pid $sshd_pid listening on 127.0.0.1:$ssh_port"

# --- archives ----------------------------------------------------------------------------
site_dir="$tmp/provider/site_logs/$NODE"
mkdir -p "$site_dir"
dashes=------------------------------------------------------------------
# write_archives FROM TO: archives FROM..TO as slon writes them (a .tmp, then a rename).
write_archives() {
    local n row created name
    for ((n = $1; n <= $2; n++)); do
        if ((n % 50 == 0)); then
            # Every 50th archive updates an earlier row instead of inserting one.
            row=(1 $((7000 + n)) 1 "$n" s1 t1 U 1 "{txt,\"updated\",id,$((n - 10))}")
        else
            row=(1 $((7000 + n)) 1 "$n" s1 t1 I 0 "{id,$n,txt,\"row $n it's \\\\\"quoted\\\\\"\"}")
        fi
        created=$(date -u '+%Y-%m-%d %H:%M:%S+00')
        name=$(printf 'slony1_log_2_%020d.sql' "$n")
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
            (IFS=$'\t'; echo "${row[*]}")
            echo '\.'
            echo "$dashes"
            echo "-- End Of Archive Log"
            echo "$dashes"
            echo "commit;"
            echo "vacuum analyze \"_$CLUSTER\".sl_archive_tracking;"
        } >"$site_dir/$name.tmp"
        mv "$site_dir/$name.tmp" "$site_dir/$name"
    done
    echo "$(printf 'slony1_log_2_%020d.sql' "$1") ... $(printf 'slony1_log_2_%020d.sql' "$2")"
}
say "writing $ARCHIVES Slony-I 2.2 archives to $site_dir"
write_archives 1 "$ARCHIVES"

# --- the receiver ------------------------------------------------------------------------
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
log_dir = "$tmp/provider/site_logs"

[local]
log_dir = "$tmp/receiver"

[database]
host = "127.0.0.1"
port = $pg_port
user = "postgres"
dbname = "replica"

[alert]
recipients = []
EOF
say "configuration $tmp/receiver.toml"
cat "$tmp/receiver.toml"

say "preparing the replica: slony-receiver init --config $tmp/receiver.toml (the \"_$CLUSTER\" schema at counter 0)"
"$receiver" init --config "$tmp/receiver.toml"

say "running: slony-receiver pull --config $tmp/receiver.toml --once"
set +e
"$receiver" pull --config "$tmp/receiver.toml" --once
receiver_rc=$?
set -e
echo "slony-receiver exit code: $receiver_rc"

# --- the result ----------------------------------------------------------------------------
say "the replica's position: select at_counter from \"_$CLUSTER\".sl_archive_tracking"
psql -d replica -c "select at_counter, at_created, at_applied from \"_$CLUSTER\".sl_archive_tracking"
say "rows replicated: select count(*) from s1.t1"
psql -d replica -c 'select count(*) from s1.t1'
say "a few rows (ids 40, 90, ... were changed by the update archives)"
psql -d replica -c "select id, txt from s1.t1 where id <= 3 or txt = 'updated' or id = (select max(id) from s1.t1) order by id"
say "local files under $tmp/receiver/$NODE"
echo "slony_counter.txt: $(cat "$tmp/receiver/$NODE/slony_counter.txt" 2>/dev/null || echo '(missing)')"
echo "applied/: $(find "$tmp/receiver/$NODE/applied" -type f 2>/dev/null | wc -l) archives"
echo "incoming/: $(find "$tmp/receiver/$NODE/incoming" -type f 2>/dev/null | wc -l) files"

if ((receiver_rc != 0)); then
    echo "demo: slony-receiver failed with exit code $receiver_rc" >&2
    exit "$receiver_rc"
fi

# --- day-to-day operation ------------------------------------------------------------------
more=$((ARCHIVES + 20))
say "the provider publishes 20 more archives; slony-receiver status --config $tmp/receiver.toml"
write_archives $((ARCHIVES + 1)) "$more"
set +e
"$receiver" status --config "$tmp/receiver.toml"
echo "status exit code: $? (0 healthy, 20 when the lag passes [status] thresholds)"
set -e

say "guarding the replica: slony-receiver guard --config $tmp/receiver.toml on"
"$receiver" guard --config "$tmp/receiver.toml" on
say "a local write to a replicated table is refused:"
psql -d replica -c "update s1.t1 set txt = 'local change' where id = 1" || true
say "while archives still apply: slony-receiver pull --once"
"$receiver" pull --config "$tmp/receiver.toml" --once
"$receiver" status --config "$tmp/receiver.toml"

say "promoting the replica to a standalone database: slony-receiver promote --config $tmp/receiver.toml"
"$receiver" promote --config "$tmp/receiver.toml"
say "writes succeed now:"
psql -d replica -c "update s1.t1 set txt = 'local change' where id = 1 returning id, txt"
say "and pull refuses to run (exit 22):"
set +e
"$receiver" pull --config "$tmp/receiver.toml" --once
echo "slony-receiver exit code: $?"
set -e

say "done: $more archives pulled over SSH and applied in order, then the replica promoted"
