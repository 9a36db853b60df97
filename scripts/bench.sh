#!/usr/bin/env bash
# Benchmarks the subscriber side: how fast `slony-receiver pull --once` brings a
# replica up to date over SSH, against the original per-file method (one `scp` plus
# one `psql -f` per archive), Slony's own `slony_logshipper`, and the floor (the same
# SQL concatenated into one local `psql` session, no transfer at all); and how soon
# the pull daemon applies an archive that appears.
#
# Builds the workspace in release mode, then in a throwaway directory starts a
# private PostgreSQL (fsync on unless FSYNC=off) and a private sshd on 127.0.0.1
# with keys generated for this run, writes the workloads of Slony-I 2.2 archives
# (COPY into "_bench".sl_log_archive, exactly as slon writes them; written by
# scripts/lib/gen_archives.py) into the provider's site directories, and applies each
# with every method, each into its own fresh replica database at counter 0. Sections
# (ONLY selects some; all by default):
#
#   w1  backlog: N_SMALL small archives (a third idle SYNCs, the rest 1 to 5 rows and
#       a sequence call); receiver with group_commit = 1, with the default config
#       (group_commit = 250, fetch_sessions = 4), with group_commit = 200 and
#       fetch_ahead = 400, and from
#       the same archives packed in tar.gz batches of 5000 as the provider's
#       housekeeping leaves them; per-file on the first PERFILE_N archives only (it is
#       slow; its rate is reported), slony_logshipper and the floor on all of them;
#   sessions  workload 1 again, receiver with `[pull] fetch_sessions = N` (parallel
#       SSH sessions fetching) for every N of SESSIONS;
#   backlog100k  N_BIG_BACKLOG archives of the same kind (the first N_SMALL are
#       workload 1's) in one site directory: receiver default config; its rate against
#       workload 1's default, its peak RSS against workload 1's, and the time it took
#       to list and plan (the list_ms and plan_ms of its "applying new archives" line,
#       when the receiver logs them). No floor (too slow on 100,000 files);
#   w2  bulk: N_MB archives of about 1 MB (about 1000 rows each: inserts, updates,
#       deletes); receiver (default config), slony_logshipper, the floor, per-file on
#       the first PERFILE_MB_N archives;
#   w3  one archive of BIG_MB MB: receiver (default config), wall time and peak RSS;
#   wan  through scripts/lib/delay_proxy.py, a TCP proxy on 127.0.0.1 in front of the
#       sshd that delays every chunk by WAN_RTT_MS/2 each way without limiting
#       throughput (measured: 20 sequential request/response exchanges through it, and
#       `ssh true` through it against direct): receiver default config on the first
#       WAN_N archives of workload 1 (a provider directory of their own), the same
#       with fetch_sessions = WAN_SESSIONS, the receiver from workload 1's tar.gz
#       batches (all N_SMALL), and per-file (scp + psql -f) on the first WAN_PERFILE_N;
#   latency  `slony-receiver pull` as a daemon (poll_interval_secs = LAT_POLL,
#       RUST_LOG=slony_receiver=debug) on an empty site directory; a writer places
#       LAT_N archives of workload 1 one at a time after random pauses of 0 to
#       2 x LAT_POLL s (seeded; each written to .tmp-<name> and renamed into place);
#       per archive, latency = the time of its "applied" log line - the time of its
#       rename: median, p90, p99, max.
#
# After every run the harness checks the replica's sl_archive_tracking.at_counter
# against the last counter applied and stops loudly on a mismatch; it also compares
# a fingerprint of the replicated tables (row count and a hash of every row, and the
# sequences) between all the runs that applied the same archives (the generator makes
# the first k archives of a kind the same files whatever the count, so e.g. the WAN
# sample, the latency run and the per-file sample are compared wherever their counts
# meet). The receiver runs with `pull.acknowledge = false` (nothing written back to
# the provider, so every method sees the same directory); every other key has its
# default. slony_logshipper reads the archives from the provider's directory directly
# (a local directory, no transfer), as it would once something else copied them over.
#
# Prints one table: wall time, archives/s, MB/s, peak RSS of the receiver, the 1-minute
# load average just before the run, and how many times faster the receiver's default
# config is than each other method of the same workload; then the checks against the
# targets, the WAN figures and the latency figures.
#
# Usage: scripts/bench.sh       (full sizes: about 25 to 30 minutes on 2 cores;
#                                QUICK=1: about 3 minutes)
#   ONLY="w1 w2 w3 sessions backlog100k wan latency"   sections to run (default all)
#   N_SMALL=10000 N_MB=1000 BIG_MB=1024   workload sizes
#   PERFILE_N=500 PERFILE_MB_N=50          per-file sample sizes (0 skips)
#   LS_MB=1                                 slony_logshipper on workload 2 (0 skips)
#   SESSIONS="1 2 4 8"                      fetch_sessions values ("" skips those rows)
#   N_BIG_BACKLOG=100000                    the big backlog
#   WAN_RTT_MS=20 WAN_N=2000 WAN_PERFILE_N=50   WAN: round trip, samples (0 skips)
#   WAN_SESSIONS=8                          WAN fetch_sessions row (default: the
#                                           largest of SESSIONS; "" skips)
#   LAT_N=200 LAT_POLL=1                    latency: archives, poll interval (s)
#   QUICK=1                                 small sizes for a quick check (1000 / 20 /
#                                           64 MB, 10,000 backlog, WAN 200 and 10,
#                                           latency 40)
#   FSYNC=on|off                            PostgreSQL fsync (default on)
#   BENCH_KEEP=1                            keep the work directory
#   SESSIONS_KEY=fetch_sessions             the key the sessions rows set (another
#                                           existing key tests the plumbing before the
#                                           receiver has fetch_sessions)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }

SECTIONS="w1 sessions backlog100k w2 w3 wan latency"
ONLY=${ONLY:-$SECTIONS}
for s in $ONLY; do
    [[ " $SECTIONS " == *" $s "* ]] || die "ONLY: unknown section '$s' (sections: $SECTIONS)"
done
want() { [[ " $ONLY " == *" $1 "* ]]; }

if [[ ${QUICK:-0} == 1 ]]; then
    N_SMALL=${N_SMALL:-1000}
    N_MB=${N_MB:-20}
    BIG_MB=${BIG_MB:-64}
    PERFILE_N=${PERFILE_N:-100}
    PERFILE_MB_N=${PERFILE_MB_N:-5}
    N_BIG_BACKLOG=${N_BIG_BACKLOG:-10000}
    WAN_N=${WAN_N:-200}
    WAN_PERFILE_N=${WAN_PERFILE_N:-10}
    LAT_N=${LAT_N:-40}
fi
N_SMALL=${N_SMALL:-10000}
N_MB=${N_MB:-1000}
BIG_MB=${BIG_MB:-1024}
PERFILE_N=${PERFILE_N:-500}
PERFILE_MB_N=${PERFILE_MB_N:-50}
LS_MB=${LS_MB:-1}
FSYNC=${FSYNC:-on}
SESSIONS=${SESSIONS-1 2 4 8}
SESSIONS_KEY=${SESSIONS_KEY:-fetch_sessions}
N_BIG_BACKLOG=${N_BIG_BACKLOG:-100000}
WAN_RTT_MS=${WAN_RTT_MS:-20}
WAN_N=${WAN_N:-2000}
WAN_PERFILE_N=${WAN_PERFILE_N:-50}
LAT_N=${LAT_N:-200}
LAT_POLL=${LAT_POLL:-1}
if [[ -z ${WAN_SESSIONS+set} ]]; then
    WAN_SESSIONS=
    for s in $SESSIONS; do
        if [[ -z $WAN_SESSIONS ]] || ((s > WAN_SESSIONS)); then
            WAN_SESSIONS=$s
        fi
    done
fi
for v in N_SMALL N_MB BIG_MB PERFILE_N PERFILE_MB_N LS_MB N_BIG_BACKLOG WAN_RTT_MS WAN_N WAN_PERFILE_N LAT_N LAT_POLL; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
for s in $SESSIONS $WAN_SESSIONS; do
    [[ $s =~ ^[0-9]+$ ]] || die "SESSIONS and WAN_SESSIONS take whole numbers, not '$s'"
done
((N_SMALL > 0 && N_MB > 0 && BIG_MB > 0 && N_BIG_BACKLOG > 0 && WAN_N > 0 && LAT_N > 0 && LAT_POLL > 0)) ||
    die "the workload sizes, WAN_N, LAT_N and LAT_POLL must be at least 1"
((PERFILE_N <= N_SMALL)) || PERFILE_N=$N_SMALL
((PERFILE_MB_N <= N_MB)) || PERFILE_MB_N=$N_MB
((WAN_PERFILE_N <= WAN_N)) || WAN_PERFILE_N=$WAN_N

CLUSTER=bench
NODE=site1

# shellcheck source=scripts/lib/servers.sh
source "$repo/scripts/lib/servers.sh"

if want w1 || { want w2 && ((LS_MB > 0)); }; then
    command -v slony_logshipper >/dev/null 2>&1 || die "slony_logshipper not found (Debian package slony1-2-bin)"
fi
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found (Debian package time)"
find_pg_bin

# --- build ----------------------------------------------------------------------------
say "building the workspace (release)"
cargo build --release --workspace --bins --quiet
receiver="${CARGO_TARGET_DIR:-$repo/target}/release/slony-receiver"
[[ -x $receiver ]] || die "built binary not found at $receiver"

# --- work directory and clean-up ----------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/slony-bench.XXXXXX")
chmod 0755 "$work"
child_pid=
daemon_pid=
proxy_pid=
ls_config=

# True while process $1 runs (a zombie, exited but not yet waited for, does not count).
alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c 1) || return 1
    [[ -n $state && $state != Z ]]
}

# Ends a child of this script: SIGTERM to it (and to its own children first, when $2 is
# "tree": /usr/bin/time does not pass a signal on), up to 5 s, then SIGKILL; reaps it.
# Returns the child's exit status.
end_child() { # PID [tree]
    local pid=$1 tries=50 rc=0
    if alive "$pid"; then
        if [[ ${2:-} == tree ]]; then
            pkill -TERM -P "$pid" 2>/dev/null
        fi
        kill -TERM "$pid" 2>/dev/null
        while alive "$pid" && ((tries-- > 0)); do
            sleep 0.1
        done
        if alive "$pid"; then
            [[ ${2:-} == tree ]] && pkill -KILL -P "$pid" 2>/dev/null
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null || rc=$?
    return "$rc"
}

cleanup() {
    local rc=$?
    set +e
    [[ -n $child_pid ]] && end_child "$child_pid" tree
    [[ -n $daemon_pid ]] && end_child "$daemon_pid"
    [[ -n $proxy_pid ]] && end_child "$proxy_pid"
    if [[ -n $ls_config && -f $ls_config ]]; then
        slony_logshipper -c "$ls_config" >/dev/null 2>&1 # its semaphores and queue
    fi
    stop_servers "$work" "$rc"
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then
        printf 'bench directory kept: %s\n' "$work" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs "$@" as a tracked child (killed by the clean-up if the script is interrupted).
run_child() {
    local rc=0
    "$@" &
    child_pid=$!
    wait "$child_pid" || rc=$?
    child_pid=
    return "$rc"
}

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
load1() { cut -d " " -f 1 /proc/loadavg; }
# A fact for the report: KEY VALUE...
fact() { printf '%s=%s\n' "$1" "${*:2}" >>"$work/results/facts"; }

# --- PostgreSQL ------------------------------------------------------------------------------
say "starting a private PostgreSQL ($PG_BIN, fsync=$FSYNC) in $work"
start_postgres "$work" -c "fsync=$FSYNC"
pg_settings=$(psql -d postgres -tAc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_wal_size')")
pg_version=$(psql -d postgres -tAc "SELECT current_setting('server_version')")

# --- sshd (the provider) ------------------------------------------------------------------
say "starting a private sshd on 127.0.0.1 (keys generated for this run)"
start_sshd "$work" slony-bench "LogLevel ERROR" "MaxStartups 100:30:200"
ssh_base=(-i "$work/ssh/client_key" -o BatchMode=yes -o IdentitiesOnly=yes
    -o "UserKnownHostsFile=$work/ssh/known_hosts" -o StrictHostKeyChecking=yes)

# --- workloads ------------------------------------------------------------------------------
mkdir -p "$work/local" "$work/configs" "$work/logs" "$work/results"
: >"$work/results/table"
: >"$work/results/facts"
gen() { python3 "$repo/scripts/lib/gen_archives.py" --cluster "$CLUSTER" "$@"; }
w1_dir=$work/provider/w1/$NODE
if want w1 || want sessions || want wan; then
    say "writing workload 1: $N_SMALL small archives, and its tar.gz batches"
    w1_bytes=$(gen small "$w1_dir" "$N_SMALL")
    if want w1 || want wan; then
        gen batches "$w1_dir" "$work/provider/w1b/$NODE" >/dev/null
    fi
fi
if want backlog100k; then
    say "writing the big backlog: $N_BIG_BACKLOG small archives"
    big_bytes=$(gen small "$work/provider/big/$NODE" "$N_BIG_BACKLOG")
fi
if want w2; then
    say "writing workload 2: $N_MB archives of ~1 MB"
    w2_dir=$work/provider/w2/$NODE
    w2_bytes=$(gen bulk "$w2_dir" "$N_MB")
fi
if want w3; then
    say "writing workload 3: one archive of $BIG_MB MB"
    w3_bytes=$(gen big "$work/provider/w3/$NODE" "$BIG_MB")
fi
if want wan; then
    wan_dir=$work/provider/wan/$NODE
    wan_bytes=$(gen small "$wan_dir" "$WAN_N")
fi
if want latency; then
    gen small "$work/lat-src" "$LAT_N" >/dev/null
fi

# --- replica databases ---------------------------------------------------------------------
# A template with the user tables and the "_bench" schema at counter 0 (made by
# `slony-receiver init`); every run gets its own copy.
receiver_config() { # FILE DB PROVIDER_DIR LOCAL_DIR EXTRA [SSH PORT]
    cat >"$1" <<EOF
cluster = "$CLUSTER"
node = "$NODE"
[remote]
host = "127.0.0.1"
port = ${6:-$ssh_port}
user = "$ssh_user"
key_file = "$work/ssh/client_key"
known_hosts = "$work/ssh/known_hosts"
log_dir = "$3"
[local]
log_dir = "$4"
[database]
host = "127.0.0.1"
port = $pg_port
user = "postgres"
dbname = "$2"
[pull]
acknowledge = false
$5
EOF
}
psql -d postgres -c "CREATE DATABASE tmpl"
psql -d tmpl <<'SQL'
CREATE SCHEMA s1;
CREATE TABLE s1.t1 (id bigint PRIMARY KEY, txt text, num numeric, ts timestamptz);
CREATE TABLE s1.t2 (k text PRIMARY KEY, v int);
CREATE TABLE s1.bulk (id bigint PRIMARY KEY, grp int, payload text);
CREATE SEQUENCE s1.seq1;
CREATE SEQUENCE s1.bulk_id_seq;
SQL
receiver_config "$work/configs/tmpl.toml" tmpl "$work/provider/w1" "$work/local/tmpl" ""
"$receiver" init --config "$work/configs/tmpl.toml" --counter 0 >"$work/logs/init.log" 2>&1 ||
    { cat "$work/logs/init.log" >&2; die "slony-receiver init failed"; }
fresh_db() { psql -d postgres -c "CREATE DATABASE \"$1\" TEMPLATE tmpl"; }

# Checks that database $1 ended at counter $2; records the fingerprint of its tables
# and compares it with the first run that applied the same archives (SET names them,
# e.g. small:1000 for the first 1000 archives of the small kind).
check() { # DB COUNTER SET
    local db=$1 want=$2 set=$3 got ref
    got=$(psql -d "$db" -tAc "SELECT at_counter FROM \"_$CLUSTER\".sl_archive_tracking")
    [[ $got == "$want" ]] || die "$db: sl_archive_tracking.at_counter is '$got', expected $want"
    psql -d "$db" -tAc "SELECT (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM s1.t1 t)
        || ' ' || (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM s1.t2 t)
        || ' ' || (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM s1.bulk t)
        || ' ' || (SELECT last_value FROM s1.seq1) || ' ' || (SELECT last_value FROM s1.bulk_id_seq)" \
        >"$work/results/$db.fingerprint"
    psql -d postgres -c "DROP DATABASE \"$db\"" # keep the disk free for the next run
    ref=$work/results/set-$set
    if [[ -f $ref ]]; then
        ref=$(cat "$ref")
        cmp -s "$work/results/$ref.fingerprint" "$work/results/$db.fingerprint" ||
            die "$ref and $db applied the same archives ($set) but hold different data: $(cat "$work/results/$ref.fingerprint") vs $(cat "$work/results/$db.fingerprint")"
        compared=$((${compared:-0} + 1))
    else
        echo "$db" >"$ref"
    fi
}

# Result lines: key|workload|method|archives|bytes|seconds|peak RSS kB (or -)|note|load|list_ms|plan_ms
record() { echo "$1|$2|$3|$4|$5|$6|$7|$8|$9|${10:--}|${11:--}" >>"$work/results/table"; }

# Sum of the sizes of the first N archives of a directory.
first_bytes() { # DIR N
    python3 - "$1" "$2" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
print(sum(os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))[:n]))
PY
}

# A field n=<digits> of the receiver's "applying new archives" line, or nothing.
log_field() { # LOG FIELD
    sed -n "s/.*applying new archives.* $2=\([0-9][0-9]*\).*/\1/p" "$1" | head -n 1
}

# --- the methods ---------------------------------------------------------------------------------
# Every run takes a key (workload.method, used by the report) and a workload key (w1,
# w2, ...; its label is in title[]).
declare -A title
# slony-receiver pull --once; KEY W PROVIDER_ROOT N BYTES SET LABEL EXTRA_CONFIG [SSH PORT]
run_pull() {
    local key=$1 w=$2 provider=$3 n=$4 bytes=$5 set=$6 label=$7 extra=$8 port=${9:-$ssh_port}
    local db cfg secs rss load
    pulls=$((${pulls:-0} + 1))
    db=${w}_pull$pulls
    fresh_db "$db"
    cfg=$work/configs/$db.toml
    receiver_config "$cfg" "$db" "$provider" "$work/local/$db" "$extra" "$port"
    sync
    say "$w: slony-receiver pull --once ($label)"
    load=$(load1)
    run_child /usr/bin/time -f '%e %M' -o "$work/results/$db.time" \
        env RUST_LOG="${BENCH_RUST_LOG:-info}" "$receiver" pull --once --config "$cfg" \
        >"$work/logs/$db.log" 2>&1 || { tail -n 30 "$work/logs/$db.log" >&2; die "$db: pull failed"; }
    read -r secs rss <"$work/results/$db.time"
    check "$db" "$n" "$set"
    rm -rf "$work/local/$db"
    record "$key" "${title[$w]}" "slony-receiver pull, $label" "$n" "$bytes" "$secs" "$rss" "" "$load" \
        "$(log_field "$work/logs/$db.log" list_ms)" "$(log_field "$work/logs/$db.log" plan_ms)"
}

# Fails early when the receiver refuses config lines (e.g. a key it does not know yet):
# one pull --once on an empty site directory. EXTRA WHAT
probe_pull() {
    local db cfg
    probes=$((${probes:-0} + 1))
    db=probe$probes
    mkdir -p "$work/provider/empty/$NODE"
    fresh_db "$db"
    cfg=$work/configs/$db.toml
    receiver_config "$cfg" "$db" "$work/provider/empty" "$work/local/$db" "$1"
    "$receiver" pull --once --config "$cfg" >"$work/logs/$db.log" 2>&1 ||
        { tail -n 20 "$work/logs/$db.log" >&2; die "the receiver refuses '$1' ($2)"; }
    psql -d postgres -c "DROP DATABASE \"$db\""
    rm -rf "$work/local/$db"
}

# The original: one scp and one psql -f per archive; KEY W DIR N BYTES TOTAL_ARCHIVES SET [SSH PORT]
run_perfile() {
    local key=$1 w=$2 dir=$3 n=$4 bytes=$5 total=$6 set=$7 port=${8:-$ssh_port}
    local db="${2}_perfile" t0 t1 f note='' dest load files
    dest=$work/local/$db
    fresh_db "$db"
    mkdir -p "$dest"
    mapfile -t files < <(find "$dir" -maxdepth 1 -name '*.sql' -printf '%f\n' | sort | head -n "$n")
    ((${#files[@]} == n)) || die "$dir: ${#files[@]} archives, expected at least $n"
    sync
    say "$w: per-file scp + psql -f, first $n archives"
    load=$(load1)
    t0=$(now)
    for f in "${files[@]}"; do
        scp -q -P "$port" "${ssh_base[@]}" "$ssh_user@127.0.0.1:$dir/$f" "$dest/$f" || die "scp $f failed"
        psql -d "$db" -f "$dest/$f" >/dev/null 2>>"$work/logs/$db.log" || die "psql -f $f failed"
    done
    t1=$(now)
    check "$db" "$n" "$set"
    rm -rf "$dest"
    if ((n < total)); then
        note="sample: first $n of $total archives"
    fi
    record "$key" "${title[$w]}" "per-file: scp + psql -f per archive" "$n" "$bytes" "$(elapsed "$t0" "$t1")" - "$note" "$load"
}

# Slony's slony_logshipper, from the provider's directory; KEY W DIR N BYTES SET
run_logshipper() {
    local key=$1 w=$2 dir=$3 n=$4 bytes=$5 set=$6 db="${2}_logshipper" t0 t1 load
    fresh_db "$db"
    ls_config=$work/configs/$db.conf
    cat >"$ls_config" <<EOF
logfile = '$work/logs/$db.log';
cluster name = '$CLUSTER';
destination database = 'host=127.0.0.1 port=$pg_port user=postgres dbname=$db';
archive dir = '$dir';
max archives = 100000000;
EOF
    sync
    say "$w: slony_logshipper (local directory, no transfer)"
    load=$(load1)
    t0=$(now)
    # -f: foreground; -w: exit once every archive in the directory is applied.
    run_child slony_logshipper -q -f -w "$ls_config" >"$work/logs/$db.out" 2>&1 ||
        { tail -n 20 "$work/logs/$db.log" "$work/logs/$db.out" >&2; die "$db: slony_logshipper failed"; }
    t1=$(now)
    ls_config=
    check "$db" "$n" "$set"
    record "$key" "${title[$w]}" "slony_logshipper (local files)" "$n" "$bytes" "$(elapsed "$t0" "$t1")" - "" "$load"
}

# The floor: every archive concatenated into one local psql session; KEY W DIR N BYTES SET
run_floor() {
    local key=$1 w=$2 dir=$3 n=$4 bytes=$5 set=$6 db="${2}_floor" t0 t1 load
    fresh_db "$db"
    sync
    say "$w: floor: cat *.sql | psql (one session, no transfer)"
    load=$(load1)
    t0=$(now)
    (cd "$dir" && cat -- *.sql) | psql -d "$db" >/dev/null 2>"$work/logs/$db.log" ||
        { tail -n 20 "$work/logs/$db.log" >&2; die "$db: psql failed"; }
    t1=$(now)
    check "$db" "$n" "$set"
    record "$key" "${title[$w]}" "floor: all archives concatenated, one psql session" "$n" "$bytes" "$(elapsed "$t0" "$t1")" - "" "$load"
}

# --- the delaying proxy (WAN) ------------------------------------------------------------------
start_proxy() {
    local tries=100 t0 t1 i via port
    say "starting the delaying proxy (${WAN_RTT_MS} ms round trip) in front of the sshd"
    python3 "$repo/scripts/lib/delay_proxy.py" serve --target-port "$ssh_port" --rtt-ms "$WAN_RTT_MS" \
        --ready-file "$work/proxy.ready" --echo --parent $$ </dev/null >"$work/logs/proxy.log" 2>&1 &
    proxy_pid=$!
    until [[ -f $work/proxy.ready ]]; do
        alive "$proxy_pid" || { cat "$work/logs/proxy.log" >&2; die "the delaying proxy exited during start-up"; }
        ((tries-- > 0)) || die "the delaying proxy not ready after 10 s"
        sleep 0.1
    done
    read -r proxy_port proxy_echo_port <"$work/proxy.ready"
    # The same sshd, so the same host key, under the proxy's address.
    printf '[127.0.0.1]:%s %s\n' "$proxy_port" "$(cat "$work/ssh/host_key.pub")" >>"$work/ssh/known_hosts"
    # The delay, measured: 20 sequential request/response exchanges through the proxy's
    # echo listener (same process, same code path as the sshd's), and `ssh true`.
    wan_rtt=$(python3 "$repo/scripts/lib/delay_proxy.py" measure --port "$proxy_echo_port" --count 20) ||
        die "measuring the proxy's round trip failed"
    fact wan_rtt "$wan_rtt"
    # `ssh true`, 5 times each way, alternating; the median of each.
    : >"$work/results/ssh.direct"
    : >"$work/results/ssh.proxy"
    for i in 1 2 3 4 5; do
        for via in direct proxy; do
            port=$ssh_port
            [[ $via == proxy ]] && port=$proxy_port
            t0=$(now)
            ssh -p "$port" "${ssh_base[@]}" "$ssh_user@127.0.0.1" true </dev/null ||
                die "ssh through port $port failed (run $i)"
            t1=$(now)
            elapsed "$t0" "$t1" >>"$work/results/ssh.$via"
            echo >>"$work/results/ssh.$via"
        done
    done
    fact wan_ssh_direct "$(sort -n "$work/results/ssh.direct" | sed -n 3p)"
    fact wan_ssh_proxy "$(sort -n "$work/results/ssh.proxy" | sed -n 3p)"
    say "proxy on port $proxy_port: round trip $wan_rtt ms (median min max of 20)"
}

# --- latency in daemon mode ----------------------------------------------------------------------
run_latency() {
    local db=latency site=$work/provider/lat/$NODE cfg log bound tries rc=0 load lat
    fresh_db "$db"
    mkdir -p "$site"
    cfg=$work/configs/$db.toml
    log=$work/logs/$db.log
    receiver_config "$cfg" "$db" "$work/provider/lat" "$work/local/$db" "poll_interval_secs = $LAT_POLL"
    # A hard bound on the daemon, whatever happens: the writer's longest run and a minute.
    bound=$((LAT_N * 2 * LAT_POLL + 120))
    say "latency: slony-receiver pull (daemon, poll $LAT_POLL s), $LAT_N archives placed at random intervals"
    load=$(load1)
    RUST_LOG=slony_receiver=debug timeout -k 10 "$bound" "$receiver" pull --config "$cfg" \
        </dev/null >"$log" 2>&1 &
    daemon_pid=$!
    tries=300 # its first run, on the empty directory: 30 s
    until grep -q "up to date" "$log"; do
        alive "$daemon_pid" || { tail -n 30 "$log" >&2; die "the pull daemon exited"; }
        ((tries-- > 0)) || { tail -n 30 "$log" >&2; die "the pull daemon's first run did not end within 30 s"; }
        sleep 0.1
    done
    run_child python3 "$repo/scripts/lib/latency.py" write "$work/lat-src" "$site" "$LAT_N" "$LAT_POLL" 11 \
        "$work/results/latency.renames" || die "the latency writer failed"
    tries=600 # the last archive: 60 s
    until grep -Eq "DEBUG.* applied counter=$LAT_N( |\$)" "$log"; do
        alive "$daemon_pid" || { tail -n 30 "$log" >&2; die "the pull daemon exited"; }
        ((tries-- > 0)) || { tail -n 30 "$log" >&2; die "archive $LAT_N not applied within 60 s of its rename"; }
        sleep 0.1
    done
    end_child "$daemon_pid" || rc=$?
    daemon_pid=
    ((rc == 0)) || { tail -n 30 "$log" >&2; die "the pull daemon exited with status $rc on SIGTERM"; }
    check "$db" "$LAT_N" "small:$LAT_N"
    rm -rf "$work/local/$db"
    lat=$(python3 "$repo/scripts/lib/latency.py" report "$log" "$work/results/latency.renames" "$LAT_N") ||
        die "the latency report failed"
    fact latency "$lat"
    fact latency_load "$load"
}

started=$(now)
load_start=$(cut -d " " -f 1-3 /proc/loadavg)
if want sessions && [[ -n $SESSIONS ]]; then
    for s in $SESSIONS; do
        probe_pull "$SESSIONS_KEY = $s" "the sessions rows; SESSIONS=\"\" skips them"
    done
fi
if want wan && [[ -n $WAN_SESSIONS ]]; then
    probe_pull "$SESSIONS_KEY = $WAN_SESSIONS" "the WAN sessions row; WAN_SESSIONS=\"\" skips it"
fi

title[w1]="1. backlog: $N_SMALL small archives"
if want w1; then
    run_pull w1.gc1 w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "small:$N_SMALL" "group_commit = 1" "group_commit = 1"
    run_pull w1.default w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "small:$N_SMALL" "default (group_commit = 250, fetch_sessions = 4)" ""
    run_pull w1.gc200 w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "small:$N_SMALL" "group_commit = 200, fetch_ahead = 400" \
        "group_commit = 200
fetch_ahead = 400"
    # The same archives as the provider's housekeeping packs them (slony_logs_<from>-<to>.tar.gz
    # of 5000): what a site catching up after a long outage mostly finds.
    run_pull w1.batches w1 "$work/provider/w1b" "$N_SMALL" "$w1_bytes" "small:$N_SMALL" "from the provider's tar.gz batches of 5000" ""
    run_logshipper w1.logshipper w1 "$w1_dir" "$N_SMALL" "$w1_bytes" "small:$N_SMALL"
    run_floor w1.floor w1 "$w1_dir" "$N_SMALL" "$w1_bytes" "small:$N_SMALL"
    if ((PERFILE_N > 0)); then
        run_perfile w1.perfile w1 "$w1_dir" "$PERFILE_N" "$(first_bytes "$w1_dir" "$PERFILE_N")" "$N_SMALL" "small:$PERFILE_N"
    fi
fi
if want sessions; then
    for s in $SESSIONS; do
        run_pull "w1.s$s" w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "small:$N_SMALL" "$SESSIONS_KEY = $s" "$SESSIONS_KEY = $s"
    done
fi

title[big]="4. backlog: $N_BIG_BACKLOG small archives in one directory"
if want backlog100k; then
    run_pull big.default big "$work/provider/big" "$N_BIG_BACKLOG" "$big_bytes" "small:$N_BIG_BACKLOG" "default (group_commit = 250, fetch_sessions = 4)" ""
fi

if want w2; then
    title[w2]="2. bulk: $N_MB archives of ~1 MB"
    run_pull w2.default w2 "$work/provider/w2" "$N_MB" "$w2_bytes" "bulk:$N_MB" "default (group_commit = 250, fetch_sessions = 4)" ""
    run_floor w2.floor w2 "$w2_dir" "$N_MB" "$w2_bytes" "bulk:$N_MB"
    if ((LS_MB > 0)); then
        run_logshipper w2.logshipper w2 "$w2_dir" "$N_MB" "$w2_bytes" "bulk:$N_MB"
    fi
    if ((PERFILE_MB_N > 0)); then
        run_perfile w2.perfile w2 "$w2_dir" "$PERFILE_MB_N" "$(first_bytes "$w2_dir" "$PERFILE_MB_N")" "$N_MB" "bulk:$PERFILE_MB_N"
    fi
fi

if want w3; then
    title[w3]="3. one archive of $((w3_bytes / 1000000)) MB"
    run_pull w3.default w3 "$work/provider/w3" 1 "$w3_bytes" "big:$BIG_MB" "default (group_commit = 250, fetch_sessions = 4)" ""
fi

if want wan; then
    start_proxy
    title[wan]="5. WAN: ${WAN_RTT_MS} ms round trip (measured $(cut -d ' ' -f 1 <<<"$wan_rtt") ms), workload 1 archives"
    run_pull wan.default wan "$work/provider/wan" "$WAN_N" "$wan_bytes" "small:$WAN_N" "default (group_commit = 250, fetch_sessions = 4)" "" "$proxy_port"
    if [[ -n $WAN_SESSIONS ]]; then
        run_pull wan.sessions wan "$work/provider/wan" "$WAN_N" "$wan_bytes" "small:$WAN_N" \
            "$SESSIONS_KEY = $WAN_SESSIONS" "$SESSIONS_KEY = $WAN_SESSIONS" "$proxy_port"
    fi
    run_pull wan.batches wan "$work/provider/w1b" "$N_SMALL" "$w1_bytes" "small:$N_SMALL" \
        "from the provider's tar.gz batches of 5000" "" "$proxy_port"
    if ((WAN_PERFILE_N > 0)); then
        run_perfile wan.perfile wan "$wan_dir" "$WAN_PERFILE_N" "$(first_bytes "$wan_dir" "$WAN_PERFILE_N")" "$WAN_N" \
            "small:$WAN_PERFILE_N" "$proxy_port"
    fi
    rc=0
    end_child "$proxy_pid" || rc=$?
    proxy_pid=
    if ((rc != 0)) || [[ -s $work/logs/proxy.log ]]; then
        tail -n 20 "$work/logs/proxy.log" >&2
        say "warning: the delaying proxy exited with status $rc (its log is above)"
    fi
fi

if want latency; then
    run_latency
fi
finished=$(now)
load_end=$(cut -d " " -f 1-3 /proc/loadavg)
fact compared "${compared:-0}"

# --- report -----------------------------------------------------------------------------------------
disk=$(df -h --output=source,fstype,size "$work" | tail -n 1 | tr -s ' ')
python3 - "$work/results/table" "$work/results/facts" <<PY
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1]) if l.strip()]
facts = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[2]) if "=" in l)
print()
print("machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), "
      "$(free -g | awk '/Mem:/ {print $2}') GB RAM, disk $disk; PostgreSQL $pg_version ($pg_settings)")
print("receiver: release build, $(git -C "$repo" rev-parse --short HEAD), pull.acknowledge = false; "
      "sections: $ONLY; total run $(elapsed "$started" "$finished") s; "
      "load average $load_start at the start, $load_end at the end")
print()

by_key = {r[0]: r for r in rows}
def group(key):
    return key.split(".")[0]
def rate(key):
    r = by_key.get(key)
    return int(r[3]) / float(r[5]) if r else None
def mbs(key):
    r = by_key.get(key)
    return int(r[4]) / 1e6 / float(r[5]) if r else None
def rss(key):
    r = by_key.get(key)
    return int(r[6]) / 1024 if r and r[6] != "-" else None

hdr = ["workload", "method", "archives", "MB", "wall s", "archives/s", "MB/s", "peak RSS", "load before",
       "receiver default speed / this"]
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(" --- " for _ in hdr) + "|")
order = ["w1", "w2", "w3", "big", "wan"]
for key, w, m, n, b, s, rs, note, load, list_ms, plan_ms in sorted(rows, key=lambda r: order.index(group(r[0]))):
    n, b, s = int(n), int(b), float(s)
    g = group(key)
    ref = rate(g + ".default")
    if key == g + ".default":
        ratio = "(reference)" if sum(1 for r in rows if group(r[0]) == g) > 1 else ""
    else:
        ratio = f"{ref / (n / s):.2f}x" if ref else ""
    if list_ms != "-" or plan_ms != "-":
        note = ", ".join(x for x in (note, f"list {list_ms} ms, plan {plan_ms} ms") if x)
    meth = m + (f" [{note}]" if note else "")
    print("| " + " | ".join([w, meth, str(n), f"{b / 1e6:.1f}", f"{s:.2f}", f"{n / s:.1f}", f"{b / 1e6 / s:.1f}",
                             "-" if rs == "-" else f"{int(rs) / 1024:.0f} MB", load, ratio]) + " |")
print()
compared = int(facts.get("compared", "0"))
print("data: every run ended at its expected at_counter; "
      + (f"{compared} fingerprint comparisons between runs of the same archives, all equal" if compared
         else "no two runs applied the same archives, so no fingerprint comparison"))
print()

def check(name, ok, text, skip=None):
    if ok is None:
        print(f"-      {name}: not measured ({skip or 'section not run'})")
    else:
        print(f"{'met   ' if ok else 'MISSED'} {name}: {text}")
def ratio(a, b):
    return a / b if a is not None and b else None
def at_least(x, want):
    return None if x is None else x >= want

d, fl, ls, ba = rate("w1.default"), rate("w1.floor"), rate("w1.logshipper"), rate("w1.batches")
check("workload 1, receiver default config (archive by archive over SSH): >= 1000 archives/s",
      at_least(d, 1000), d and f"{d:.0f} archives/s")
for want, step in ((1.6, "first step"), (2.0, "full goal")):
    x = ratio(d, fl)
    check(f"workload 1, default config: >= {want}x the floor ({step})", at_least(x, want),
          x and f"{x:.2f}x ({d:.0f} vs {fl:.0f} archives/s)")
x = ratio(d, ls)
check("workload 1, default config: >= 3x slony_logshipper", at_least(x, 3), x and f"{x:.2f}x ({d:.0f} vs {ls:.0f} archives/s)")
x = ratio(ba, fl)
check("workload 1 from the provider's tar.gz batches: >= 4x the floor", at_least(x, 4),
      x and f"{x:.2f}x ({ba:.0f} vs {fl:.0f} archives/s)")
x = ratio(mbs("w2.default"), mbs("w2.floor"))
check("workload 2: receiver MB/s >= floor MB/s", at_least(x, 1),
      x and f"{x:.2f}x ({mbs('w2.default'):.1f} vs {mbs('w2.floor'):.1f} MB/s)")
r3 = rss("w3.default")
check("workload 3: peak RSS <= 100 MB", None if r3 is None else r3 <= 100, r3 and f"{r3:.0f} MB")
bigr = rate("big.default")
x = ratio(bigr, d)
check("backlog of $N_BIG_BACKLOG: rate >= 0.85x workload 1's default rate", at_least(x, 0.85),
      x and f"{x:.2f}x ({bigr:.0f} vs {d:.0f} archives/s)", None if bigr is None else "workload 1 not run")
rb, r1 = rss("big.default"), rss("w1.default")
check("backlog of $N_BIG_BACKLOG: peak RSS at most 5 MB above workload 1's",
      None if rb is None or r1 is None else rb - r1 <= 5, rb and r1 and f"{rb:.0f} MB vs {r1:.0f} MB",
      None if rb is None else "workload 1 not run")
for key, label in (("big.default", "backlog of $N_BIG_BACKLOG"), ("w1.default", "workload 1 default")):
    r = by_key.get(key)
    if r:
        print(f"       {label}: listing {r[9]} ms, planning {r[10]} ms (the receiver's list_ms and plan_ms; - when it does not log them)")

print()
if "wan_rtt" in facts:
    med, lo, hi = facts["wan_rtt"].split()
    print(f"WAN: delaying proxy, {$WAN_RTT_MS} ms round trip asked; measured {med} ms "
          f"(median of 20 request/response exchanges through it, {lo}-{hi}); "
          f"ssh true (median of 5): {facts['wan_ssh_direct']} s direct, {facts['wan_ssh_proxy']} s through the proxy")
    wd = rate("wan.default")
    for key, label in (("wan.default", "receiver, default config"), ("wan.sessions", "receiver, $SESSIONS_KEY = $WAN_SESSIONS"),
                       ("wan.batches", "receiver, from the tar.gz batches"), ("wan.perfile", "per-file: scp + psql -f")):
        if key in by_key:
            r = by_key[key]
            vs = "" if key == "wan.default" or not wd else f", {rate(key) / wd:.2f}x the default's rate"
            print(f"       {label}: {rate(key):.1f} archives/s ({r[3]} archives in {float(r[5]):.2f} s{vs})")
else:
    print("-      WAN: not run")
if "latency" in facts:
    n, med, p90, p99, mx = facts["latency"].split()
    print(f"latency: pull daemon, poll_interval_secs = $LAT_POLL, {n} archives placed one at a time "
          f"0-{2 * $LAT_POLL} s apart (load {facts['latency_load']} before): rename to applied "
          f"median {med} s, p90 {p90} s, p99 {p99} s, max {mx} s (poll interval $LAT_POLL s)")
else:
    print("-      latency: not run")
PY
