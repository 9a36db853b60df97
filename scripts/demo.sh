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
is_root() { [[ $(id -u) -eq 0 ]]; }

# --- packages ---------------------------------------------------------------
packages=(openssh-server postgresql libssl-dev pkg-config)
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

# PostgreSQL 15 (Debian 12); otherwise the newest installed server.
PG_BIN=${PG_BIN:-}
if [[ -z $PG_BIN ]]; then
    if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
    else
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    fi
fi
[[ -n $PG_BIN && -x $PG_BIN/postgres && -x $PG_BIN/initdb ]] ||
    die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (Debian package postgresql); set PG_BIN"

# --- build --------------------------------------------------------------------
say "building slony-receiver"
cargo build -p slony-receiver
receiver="${CARGO_TARGET_DIR:-$repo/target}/debug/slony-receiver"
[[ -x $receiver ]] || die "built binary not found at $receiver"

# --- throwaway directory and clean-up -------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/slony-demo.XXXXXX")
chmod 0755 "$tmp"
sshd_pid=
pg_pid=
pg_runner_pid=

# Waits (bounded) for a process to exit; returns 1 if it is still there.
wait_gone() {
    local pid=$1 tries=$2
    while kill -0 "$pid" 2>/dev/null && ((tries-- > 0)); do
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n $sshd_pid ]] && kill -0 "$sshd_pid" 2>/dev/null; then
        kill -TERM "$sshd_pid"
        wait_gone "$sshd_pid" 50 || kill -KILL "$sshd_pid"
    fi
    if [[ -z $pg_pid && -f $tmp/pgdata/postmaster.pid ]]; then
        pg_pid=$(head -n 1 "$tmp/pgdata/postmaster.pid")
    fi
    if [[ -n $pg_pid ]] && kill -0 "$pg_pid" 2>/dev/null; then
        kill -INT "$pg_pid" # fast shutdown
        wait_gone "$pg_pid" 300 || kill -QUIT "$pg_pid"
        wait_gone "$pg_pid" 50
    fi
    if [[ -n $pg_runner_pid ]] && kill -0 "$pg_runner_pid" 2>/dev/null; then
        kill -TERM "$pg_runner_pid"
    fi
    if ((rc != 0)); then
        for log in "$tmp/postgres.log" "$tmp/ssh/sshd.log"; do
            if [[ -s $log ]]; then
                printf '\n--- last lines of %s ---\n' "$log" >&2
                tail -n 20 "$log" >&2
            fi
        done
    fi
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

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port tries=50
    while ((tries-- > 0)); do
        port=$((55000 + RANDOM % 5000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found in 55000-59999"
}

# --- PostgreSQL (the replica) -------------------------------------------------------
say "starting a private PostgreSQL ($PG_BIN) in $tmp"
as_pg=()
mkdir -p "$tmp/pgdata" "$tmp/pgsock"
if is_root; then
    id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (Debian package postgresql creates it)"
    chown postgres: "$tmp/pgdata" "$tmp/pgsock"
    chmod 0700 "$tmp/pgdata"
    as_pg=(runuser -u postgres --)
fi
(cd "$tmp" && "${as_pg[@]}" "$PG_BIN/initdb" -N -A trust -U postgres -E UTF8 --no-locale \
    -D "$tmp/pgdata" >"$tmp/initdb.log" 2>&1) || {
    cat "$tmp/initdb.log" >&2
    die "initdb failed"
}
pg_port=$(free_port)
(cd "$tmp" && exec "${as_pg[@]}" "$PG_BIN/postgres" -D "$tmp/pgdata" \
    -c "port=$pg_port" -c listen_addresses=127.0.0.1 \
    -c "unix_socket_directories=$tmp/pgsock" \
    -c fsync=off -c full_page_writes=off -c synchronous_commit=off \
    </dev/null >"$tmp/postgres.log" 2>&1) &
pg_runner_pid=$!
tries=300
until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres; do
    kill -0 "$pg_runner_pid" 2>/dev/null || die "PostgreSQL exited during start-up (see $tmp/postgres.log)"
    ((tries-- > 0)) || die "PostgreSQL not ready after 30 s"
    sleep 0.1
done
pg_pid=$(head -n 1 "$tmp/pgdata/postmaster.pid")
echo "PostgreSQL pid $pg_pid listening on 127.0.0.1:$pg_port"

psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"
}

say "creating database replica with a user table s1.t1"
psql -d postgres -c 'CREATE DATABASE replica'
psql -d replica -c 'CREATE SCHEMA s1; CREATE TABLE s1.t1 (id int PRIMARY KEY, txt text);'

# --- sshd (the provider) -------------------------------------------------------------
say "starting a private sshd on 127.0.0.1"
mkdir -p "$tmp/ssh"
ssh-keygen -q -t ed25519 -N '' -C 'slony-demo host' -f "$tmp/ssh/host_key"
ssh-keygen -q -t ed25519 -N '' -C 'slony-demo client' -f "$tmp/ssh/client_key"
cp "$tmp/ssh/client_key.pub" "$tmp/ssh/authorized_keys"
chmod 0600 "$tmp/ssh/authorized_keys"
if is_root && [[ ! -d /run/sshd ]]; then
    mkdir -p -m 0755 /run/sshd # privilege separation directory
fi
ssh_port=$(free_port)
cat >"$tmp/ssh/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $tmp/ssh/host_key
PidFile $tmp/ssh/sshd.pid
AuthorizedKeysFile $tmp/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel VERBOSE
UseDNS no
PrintMotd no
EOF
# OpenSSH >= 9.8 penalises addresses that connect without logging in.
if /usr/sbin/sshd -t -f <(cat "$tmp/ssh/sshd_config"; echo "PerSourcePenalties no") >/dev/null 2>&1; then
    echo "PerSourcePenalties no" >>"$tmp/ssh/sshd_config"
fi
/usr/sbin/sshd -D -e -f "$tmp/ssh/sshd_config" </dev/null >"$tmp/ssh/sshd.log" 2>&1 &
sshd_pid=$!
tries=150
until grep -q "Server listening on 127.0.0.1 port $ssh_port" "$tmp/ssh/sshd.log"; do
    kill -0 "$sshd_pid" 2>/dev/null || die "sshd exited during start-up (see $tmp/ssh/sshd.log)"
    ((tries-- > 0)) || die "sshd not listening after 15 s"
    sleep 0.1
done
printf '[127.0.0.1]:%s %s\n' "$ssh_port" "$(cat "$tmp/ssh/host_key.pub")" >"$tmp/ssh/known_hosts"
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
user = "$(id -un)"
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
