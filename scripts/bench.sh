#!/usr/bin/env bash
# Benchmarks the subscriber side: how fast `slony-receiver pull --once` brings a
# replica up to date over SSH, against the original per-file method (one `scp` plus
# one `psql -f` per archive), Slony's own `slony_logshipper`, and the floor (the same
# SQL concatenated into one local `psql` session, no transfer at all).
#
# Builds the workspace in release mode, then in a throwaway directory starts a
# private PostgreSQL (fsync on unless FSYNC=off) and a private sshd on 127.0.0.1
# with keys generated for this run, writes three workloads of Slony-I 2.2 archives
# (COPY into "_bench".sl_log_archive, exactly as slon writes them) into the
# provider's site directory, and applies each workload with every method, each into
# its own fresh replica database at counter 0:
#
#   1. backlog: N_SMALL small archives (a third idle SYNCs, the rest 1 to 5 rows and
#      a sequence call); receiver with group_commit = 1, with the default config
#      (group_commit = 20), with group_commit = 200, and from the same archives packed
#      in tar.gz batches of 5000 as the provider's housekeeping leaves them; per-file
#      on the first PERFILE_N archives only (it is
#      slow; its rate is reported), slony_logshipper and the floor on all of them;
#   2. bulk: N_MB archives of about 1 MB (about 1000 rows each: inserts, updates,
#      deletes); receiver (default config), slony_logshipper, the floor, per-file on
#      the first PERFILE_MB_N archives;
#   3. one archive of BIG_MB MB: receiver (default config), wall time and peak RSS.
#
# After every run the harness checks the replica's sl_archive_tracking.at_counter
# against the last counter applied and stops loudly on a mismatch; it also compares
# a fingerprint of the replicated tables (row count and a hash of every row) between
# the methods that applied the same archives. The receiver runs with
# `pull.acknowledge = false` (nothing written back to the provider, so every method
# sees the same directory); every other key has its default. slony_logshipper reads
# the archives from the provider's directory directly (a local directory, no
# transfer), as it would once something else copied them over.
#
# Prints one table: wall time, archives/s, MB/s, peak RSS of the receiver, and how
# many times faster the receiver's default config is than each other method.
#
# Usage: scripts/bench.sh
#   N_SMALL=10000 N_MB=1000 BIG_MB=1024   workload sizes
#   PERFILE_N=500 PERFILE_MB_N=50          per-file sample sizes (0 skips)
#   LS_MB=1                                 slony_logshipper on workload 2 (0 skips)
#   QUICK=1                                 small sizes for a quick check
#   FSYNC=on|off                            PostgreSQL fsync (default on)
#   BENCH_KEEP=1                            keep the work directory
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

if [[ ${QUICK:-0} == 1 ]]; then
    N_SMALL=${N_SMALL:-1000}
    N_MB=${N_MB:-20}
    BIG_MB=${BIG_MB:-64}
    PERFILE_N=${PERFILE_N:-100}
    PERFILE_MB_N=${PERFILE_MB_N:-5}
fi
N_SMALL=${N_SMALL:-10000}
N_MB=${N_MB:-1000}
BIG_MB=${BIG_MB:-1024}
PERFILE_N=${PERFILE_N:-500}
PERFILE_MB_N=${PERFILE_MB_N:-50}
LS_MB=${LS_MB:-1}
FSYNC=${FSYNC:-on}
((PERFILE_N <= N_SMALL)) || PERFILE_N=$N_SMALL
((PERFILE_MB_N <= N_MB)) || PERFILE_MB_N=$N_MB

CLUSTER=bench
NODE=site1

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/lib/servers.sh
source "$repo/scripts/lib/servers.sh"

command -v slony_logshipper >/dev/null 2>&1 || die "slony_logshipper not found (Debian package slony1-2-bin)"
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
ls_config=

cleanup() {
    local rc=$?
    set +e
    if [[ -n $child_pid ]] && kill -0 "$child_pid" 2>/dev/null; then
        kill -TERM "$child_pid"
        wait_gone "$child_pid" 50 || kill -KILL "$child_pid"
    fi
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

# --- PostgreSQL ------------------------------------------------------------------------------
say "starting a private PostgreSQL ($PG_BIN, fsync=$FSYNC) in $work"
start_postgres "$work" -c "fsync=$FSYNC"
pg_settings=$(psql -d postgres -tAc "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings
    WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_wal_size')")
pg_version=$(psql -d postgres -tAc "SELECT current_setting('server_version')")

# --- sshd (the provider) ------------------------------------------------------------------
say "starting a private sshd on 127.0.0.1 (keys generated for this run)"
start_sshd "$work" slony-bench "LogLevel ERROR" "MaxStartups 100:30:200"
scp_opts=(-q -P "$ssh_port" -i "$work/ssh/client_key" -o BatchMode=yes -o IdentitiesOnly=yes
    -o "UserKnownHostsFile=$work/ssh/known_hosts" -o StrictHostKeyChecking=yes)

# --- workloads ------------------------------------------------------------------------------
say "writing the workloads ($N_SMALL small archives, $N_MB of ~1 MB, one of $BIG_MB MB)"
python3 - "$work/provider" "$CLUSTER" "$NODE" "$N_SMALL" "$N_MB" "$BIG_MB" <<'PY'
import os, random, sys

root, cluster, node = sys.argv[1], sys.argv[2], sys.argv[3]
n_small, n_mb, big_mb = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rnd = random.Random(7)
dashes = "-" * 66 + "\n"

def head(c):
    return (f"{dashes}-- Slony-I log shipping archive\n-- Node 1, Event {5000000000 + c}\n{dashes}"
            "set session_replication_role to replica;\nstart transaction;\n"
            f"select \"_{cluster}\".archiveTracking_offline('{c}', "
            f"'2026-11-22 {(c // 3600) % 24:02d}:{(c // 60) % 60:02d}:{c % 60:02d}.093233+00');\n"
            f"-- end of log archiving header\n{dashes}-- start of Slony-I data\n{dashes}"
            f"COPY \"_{cluster}\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,"
            "log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n")

def tail(seqs):
    out = "\\.\n"
    for name, value in seqs:
        out += f"select \"_{cluster}\".sequenceSetValue_offline('s1','{name}','{value}');\n\n"
    return (out + f"\n{dashes}-- End Of Archive Log\n{dashes}commit;\n"
            f"vacuum analyze \"_{cluster}\".sl_archive_tracking;\n")

def elem(v):
    if v is None:
        return "NULL"
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'

def copy_escape(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")

def row(c, seq, tid, rel, kind, ncols, pairs):
    args = "{" + ",".join(elem(x) for kv in pairs for x in kv) + "}"
    return f"1\t{1000 + c}\t{tid}\t{seq}\ts1\t{rel}\t{kind}\t{ncols}\t{copy_escape(args)}\n"

def name(c):
    return f"slony1_log_2_{c:020d}.sql"

def site(w):
    d = os.path.join(root, w, node)
    os.makedirs(d, exist_ok=True)
    return d

def write(d, c, text):
    with open(os.path.join(d, name(c)), "w") as f:
        f.write(text)
    return len(text.encode())

# 1. backlog: small archives.
d = site("w1")
seq, t1_ids, total = 0, [], 0
for c in range(1, n_small + 1):
    parts, seqs = [head(c)], []
    if c % 3:
        for _ in range(rnd.randint(1, 5)):
            seq += 1
            k = rnd.random()
            if k < 0.5 or not t1_ids:
                t1_ids.append(seq)
                parts.append(row(c, seq, 1, "t1", "I", 0, [("id", str(seq)), ("txt", f"row {seq} it's a\ttab"),
                                                          ("num", f"{seq * 1.25}"), ("ts", "2026-11-22 10:00:00+00")]))
            elif k < 0.7:
                parts.append(row(c, seq, 1, "t1", "U", 1, [("txt", f"upd \"{seq}\""), ("id", str(rnd.choice(t1_ids)))]))
            elif k < 0.8:
                victim = t1_ids.pop(rnd.randrange(len(t1_ids)))
                parts.append(row(c, seq, 1, "t1", "D", 0, [("id", str(victim))]))
            else:
                parts.append(row(c, seq, 2, "t2", "I", 0, [("k", f"k{seq}"), ("v", None if seq % 7 == 0 else str(seq))]))
        seqs = [("seq1", seq)]
    parts.append(tail(seqs))
    total += write(d, c, "".join(parts))
with open(os.path.join(root, "w1.bytes"), "w") as f:
    f.write(str(total))

# 2 and 3. bulk: ~1 MB archives of inserts, updates and deletes into s1.bulk.
class Bulk:
    def __init__(self):
        self.seq = 0          # action sequence and insert id
        self.deleted = 0      # ids <= deleted are gone
    def archive(self, c, target):
        parts, size = [head(c)], 0
        while size < target:
            self.seq += 1
            k = rnd.random()
            payload = f"{self.seq:012d} " + "x" * rnd.randint(800, 1000)
            if k < 0.85 or self.seq - self.deleted < 2000:
                r = row(c, self.seq, 3, "bulk", "I", 0, [("id", str(self.seq)), ("grp", str(self.seq % 97)),
                                                           ("payload", payload)])
            elif k < 0.95:
                r = row(c, self.seq, 3, "bulk", "U", 1, [("payload", payload),
                                                           ("id", str(rnd.randint(self.deleted + 1, self.seq - 1)))])
            else:
                self.deleted += 1
                r = row(c, self.seq, 3, "bulk", "D", 0, [("id", str(self.deleted))])
            parts.append(r)
            size += len(r)
        parts.append(tail([("bulk_id_seq", self.seq)]))
        return "".join(parts)

d, b, total = site("w2"), Bulk(), 0
for c in range(1, n_mb + 1):
    total += write(d, c, b.archive(c, 1_000_000))
with open(os.path.join(root, "w2.bytes"), "w") as f:
    f.write(str(total))

d, b = site("w3"), Bulk()
with open(os.path.join(d, name(1)), "w") as f:
    # Written in pieces: the generator must not need the whole archive in memory either.
    text = b.archive(1, 1)
    f.write(text[: text.index("\\.\n")])
    size, c = 0, 1
    while size < big_mb * 1_000_000:
        chunk = b.archive(1, min(4_000_000, big_mb * 1_000_000 - size))
        body = chunk[chunk.index("FROM STDIN;\n") + 12: chunk.index("\\.\n")]
        f.write(body)
        size += len(body)
    f.write(tail([("bulk_id_seq", b.seq)]))
with open(os.path.join(root, "w3.bytes"), "w") as f:
    f.write(str(os.path.getsize(os.path.join(d, name(1)))))
PY
w1_dir=$work/provider/w1/$NODE
w2_dir=$work/provider/w2/$NODE
w3_dir=$work/provider/w3/$NODE
w1_bytes=$(cat "$work/provider/w1.bytes")
w2_bytes=$(cat "$work/provider/w2.bytes")
w3_bytes=$(cat "$work/provider/w3.bytes")

# --- replica databases ---------------------------------------------------------------------
# A template with the user tables and the "_bench" schema at counter 0 (made by
# `slony-receiver init`); every run gets its own copy.
receiver_config() { # FILE DB PROVIDER_DIR LOCAL_DIR EXTRA
    cat >"$1" <<EOF
cluster = "$CLUSTER"
node = "$NODE"
[remote]
host = "127.0.0.1"
port = $ssh_port
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
mkdir -p "$work/local" "$work/configs" "$work/logs" "$work/results"
receiver_config "$work/configs/tmpl.toml" tmpl "$work/provider/w1" "$work/local/tmpl" ""
"$receiver" init --config "$work/configs/tmpl.toml" --counter 0 >"$work/logs/init.log" 2>&1 ||
    { cat "$work/logs/init.log" >&2; die "slony-receiver init failed"; }
fresh_db() { psql -d postgres -c "CREATE DATABASE \"$1\" TEMPLATE tmpl"; }

# Checks that database $1 ended at counter $2; records the fingerprint of its tables.
check() {
    local db=$1 want=$2 got
    got=$(psql -d "$db" -tAc "SELECT at_counter FROM \"_$CLUSTER\".sl_archive_tracking")
    [[ $got == "$want" ]] || die "$db: sl_archive_tracking.at_counter is '$got', expected $want"
    psql -d "$db" -tAc "SELECT (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM s1.t1 t)
        || ' ' || (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM s1.t2 t)
        || ' ' || (SELECT count(*) || ':' || coalesce(sum(hashtext(t::text)::bigint), 0) FROM s1.bulk t)
        || ' ' || (SELECT last_value FROM s1.seq1) || ' ' || (SELECT last_value FROM s1.bulk_id_seq)" \
        >"$work/results/$db.fingerprint"
    psql -d postgres -c "DROP DATABASE \"$db\"" # keep the disk free for the next run
}
same_data() { # DB_A DB_B
    cmp -s "$work/results/$1.fingerprint" "$work/results/$2.fingerprint" ||
        die "$1 and $2 applied the same archives but hold different data: $(cat "$work/results/$1.fingerprint") vs $(cat "$work/results/$2.fingerprint")"
}

# Result lines: workload|method|archives|bytes|seconds|peak RSS kB (or -)|note
record() { echo "$1|$2|$3|$4|$5|$6|$7" >>"$work/results/table"; }

# Sum of the sizes of the first N archives of a directory.
first_bytes() { # DIR N
    python3 - "$1" "$2" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
print(sum(os.path.getsize(os.path.join(d, f)) for f in sorted(os.listdir(d))[:n]))
PY
}

# --- the methods ---------------------------------------------------------------------------------
# Every run takes a workload key (w1, w2, w3); its label is in the table.
declare -A title
# slony-receiver pull --once; W PROVIDER_ROOT N BYTES LABEL EXTRA_CONFIG
run_pull() {
    local w=$1 provider=$2 n=$3 bytes=$4 label=$5 extra=$6 db cfg secs rss
    pulls=$((${pulls:-0} + 1))
    db=${w}_pull$pulls
    fresh_db "$db"
    cfg=$work/configs/$db.toml
    receiver_config "$cfg" "$db" "$provider" "$work/local/$db" "$extra"
    sync
    say "$w: slony-receiver pull --once ($label)"
    run_child /usr/bin/time -f '%e %M' -o "$work/results/$db.time" \
        env RUST_LOG="${BENCH_RUST_LOG:-info}" "$receiver" pull --once --config "$cfg" \
        >"$work/logs/$db.log" 2>&1 || { tail -n 30 "$work/logs/$db.log" >&2; die "$db: pull failed"; }
    read -r secs rss <"$work/results/$db.time"
    check "$db" "$n"
    rm -rf "$work/local/$db"
    record "${title[$w]}" "slony-receiver pull, $label" "$n" "$bytes" "$secs" "$rss" ""
    last_db=$db
}

# The original: one scp and one psql -f per archive; W DIR N BYTES TOTAL_ARCHIVES
run_perfile() {
    local w=$1 dir=$2 n=$3 bytes=$4 total=$5 db="${1}_perfile" t0 t1 f note= dest=$work/local/${1}_perfile
    fresh_db "$db"
    mkdir -p "$dest"
    sync
    say "$w: per-file scp + psql -f, first $n archives"
    t0=$(now)
    for f in $(ls "$dir" | head -n "$n"); do
        scp "${scp_opts[@]}" "$ssh_user@127.0.0.1:$dir/$f" "$dest/$f" || die "scp $f failed"
        psql -d "$db" -f "$dest/$f" >/dev/null 2>>"$work/logs/$db.log" || die "psql -f $f failed"
    done
    t1=$(now)
    check "$db" "$n"
    rm -rf "$dest"
    if ((n < total)); then
        note="sample: first $n of $total archives"
    fi
    record "${title[$w]}" "per-file: scp + psql -f per archive" "$n" "$bytes" "$(elapsed "$t0" "$t1")" - "$note"
}

# Slony's slony_logshipper, from the provider's directory; W DIR N BYTES
run_logshipper() {
    local w=$1 dir=$2 n=$3 bytes=$4 db="${1}_logshipper" t0 t1
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
    t0=$(now)
    # -f: foreground; -w: exit once every archive in the directory is applied.
    run_child slony_logshipper -q -f -w "$ls_config" >"$work/logs/$db.out" 2>&1 ||
        { tail -n 20 "$work/logs/$db.log" "$work/logs/$db.out" >&2; die "$db: slony_logshipper failed"; }
    t1=$(now)
    ls_config=
    check "$db" "$n"
    record "${title[$w]}" "slony_logshipper (local files)" "$n" "$bytes" "$(elapsed "$t0" "$t1")" - ""
}

# The floor: every archive concatenated into one local psql session; W DIR N BYTES
run_floor() {
    local w=$1 dir=$2 n=$3 bytes=$4 db="${1}_floor" t0 t1
    fresh_db "$db"
    sync
    say "$w: floor: cat *.sql | psql (one session, no transfer)"
    t0=$(now)
    (cd "$dir" && cat -- *.sql) | psql -d "$db" >/dev/null 2>"$work/logs/$db.log" ||
        { tail -n 20 "$work/logs/$db.log" >&2; die "$db: psql failed"; }
    t1=$(now)
    check "$db" "$n"
    record "${title[$w]}" "floor: all archives concatenated, one psql session" "$n" "$bytes" "$(elapsed "$t0" "$t1")" - ""
}

started=$(now)
load_start=$(cut -d " " -f 1-3 /proc/loadavg)
# 1. backlog of small archives
title[w1]="1. backlog: $N_SMALL small archives"
run_pull w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "group_commit = 1" "group_commit = 1"
db_gc1=$last_db
run_pull w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "default (group_commit = 20)" ""
db_default=$last_db
run_pull w1 "$work/provider/w1" "$N_SMALL" "$w1_bytes" "group_commit = 200, fetch_ahead = 400" \
    "group_commit = 200
fetch_ahead = 400"
db_gc200=$last_db
# The same archives as the provider's housekeeping packs them (slony_logs_<from>-<to>.tar.gz
# of 5000): what a site catching up after a long outage mostly finds.
python3 - "$w1_dir" "$work/provider/w1b/$NODE" <<'PY'
import os, sys, tarfile
src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
names = sorted(f for f in os.listdir(src) if f.endswith(".sql"))
for i in range(0, len(names), 5000):
    chunk = names[i:i + 5000]
    first, last = (int(n.split("_")[-1][:-4]) for n in (chunk[0], chunk[-1]))
    with tarfile.open(os.path.join(dst, f"slony_logs_{first}-{last}.tar.gz"), "w:gz",
                      format=tarfile.USTAR_FORMAT) as t:
        for n in chunk:
            t.add(os.path.join(src, n), arcname=n)
PY
run_pull w1 "$work/provider/w1b" "$N_SMALL" "$w1_bytes" "from the provider's tar.gz batches of 5000" ""
db_batches=$last_db
run_logshipper w1 "$w1_dir" "$N_SMALL" "$w1_bytes"
run_floor w1 "$w1_dir" "$N_SMALL" "$w1_bytes"
same_data "$db_batches" w1_floor
same_data "$db_default" w1_floor
same_data "$db_gc1" w1_floor
same_data "$db_gc200" w1_floor
same_data w1_logshipper w1_floor
if ((PERFILE_N > 0)); then
    run_perfile w1 "$w1_dir" "$PERFILE_N" "$(first_bytes "$w1_dir" "$PERFILE_N")" "$N_SMALL"
fi

# 2. bulk: ~1 MB archives
title[w2]="2. bulk: $N_MB archives of ~1 MB"
run_pull w2 "$work/provider/w2" "$N_MB" "$w2_bytes" "default (group_commit = 20)" ""
db_default=$last_db
run_floor w2 "$w2_dir" "$N_MB" "$w2_bytes"
same_data "$db_default" w2_floor
if ((LS_MB > 0)); then
    run_logshipper w2 "$w2_dir" "$N_MB" "$w2_bytes"
    same_data w2_logshipper w2_floor
fi
if ((PERFILE_MB_N > 0)); then
    run_perfile w2 "$w2_dir" "$PERFILE_MB_N" "$(first_bytes "$w2_dir" "$PERFILE_MB_N")" "$N_MB"
fi

# 3. one big archive
title[w3]="3. one archive of $((w3_bytes / 1000000)) MB"
run_pull w3 "$work/provider/w3" 1 "$w3_bytes" "default (group_commit = 20)" ""
finished=$(now)
load_end=$(cut -d " " -f 1-3 /proc/loadavg)

# --- report -----------------------------------------------------------------------------------------
disk=$(df -h --output=source,fstype,size "$work" | tail -n 1 | tr -s ' ')
python3 - "$work/results/table" <<PY
import sys
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1])]
print()
print("machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), "
      "$(free -g | awk '/Mem:/ {print $2}') GB RAM, disk $disk; PostgreSQL $pg_version ($pg_settings)")
print("receiver: release build, $(git -C "$repo" rev-parse --short HEAD), pull.acknowledge = false; "
      "total run $(elapsed "$started" "$finished") s; load average $load_start at the start, $load_end at the end")
print()
hdr = ["workload", "method", "archives", "MB", "wall s", "archives/s", "MB/s", "peak RSS", "receiver default speed / this"]
out = []
ref = {}
for w, m, n, b, s, rss, note in rows:
    if "default" in m:
        ref[w] = int(n) / float(s)
for w, m, n, b, s, rss, note in rows:
    n, b, s = int(n), int(b), float(s)
    rate = n / s
    ratio = "" if "default" in m else f"{ref[w] / rate:.2f}x"
    if "default" in m and len([r for r in rows if r[0] == w]) > 1:
        ratio = "(reference)"
    meth = m + (f" [{note}]" if note else "")
    out.append([w, meth, str(n), f"{b / 1e6:.1f}", f"{s:.2f}", f"{rate:.1f}", f"{b / 1e6 / s:.1f}",
                "-" if rss == "-" else f"{int(rss) / 1024:.0f} MB", ratio])
print("| " + " | ".join(hdr) + " |")
print("|" + "|".join(" --- " for _ in hdr) + "|")
for r in out:
    print("| " + " | ".join(r) + " |")

def rate(w, key):
    for r in rows:
        if r[0].startswith(w) and key in r[1]:
            return int(r[2]) / float(r[4])
def rss(w):
    for r in rows:
        if r[0].startswith(w) and "default" in r[1]:
            return int(r[5]) / 1024
print()
best = max(rate("1.", "default") or 0, rate("1.", "group_commit = 1") or 0)
d = rate("1.", "default")
checks = []
if rate("1.", "per-file"):
    checks.append(("workload 1: >= 30x the per-file method", d / rate("1.", "per-file"), 30))
checks.append(("workload 1: faster than slony_logshipper", d / rate("1.", "slony_logshipper"), 1))
checks.append(("workload 1: within 1.5x of the single-psql floor", d / rate("1.", "floor"), 1 / 1.5))
checks.append(("workload 1 from batches: within 1.5x of the floor", rate("1.", "batches") / rate("1.", "floor"), 1 / 1.5))
checks.append(("workload 2: within 1.5x of the single-psql floor", rate("2.", "default") / rate("2.", "floor"), 1 / 1.5))
for name, got, want in checks:
    print(f"{'met   ' if got >= want else 'MISSED'} {name}: receiver/other speed = {got:.2f} (needs >= {want:.2f})")
r = rss("3.")
print(f"{'met   ' if r < 100 else 'MISSED'} workload 3: peak RSS {r:.0f} MB (needs < 100 MB)")
PY
