#!/usr/bin/env bash
# Benchmarks the manager's archive cutter: how many provider archives per second it
# splits into per-site directories.
#
# Builds slony-manager in release mode, generates N Slony-I 2.2 archives (COPY into
# sl_log_archive) over 10 tables in two schemas with a few sequences (every 10th archive
# an idle SYNC, every 50th an EXECUTE SCRIPT on one table), gives each of SITES sites a
# different subset of 1 to 6 tables, and runs `slony-manager cut` (one catch-up pass,
# every copy written to a temporary name, fsynced, renamed, and the site's cut_counter
# recorded, exactly as `run` does). Prints archives/s and MB/s of input.
#
# Usage: scripts/bench-cut.sh [N=2000] [SITES=20] [ROWS=100]
#   ROWS is the average number of rows per busy archive.
#   BENCH_DIR=dir keeps the generated files there (default: a temp dir, removed).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

n=${1:-2000}
sites=${2:-20}
rows=${3:-100}

cargo build --release -p slony-manager --quiet
bin=target/release/slony-manager

if [[ -n ${BENCH_DIR:-} ]]; then
    work=$BENCH_DIR
    rm -rf "$work"
    mkdir -p "$work"
else
    work=$(mktemp -d /tmp/slony-bench-cut.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work"/{archive,subscribers,site_logs,triggers}

python3 - "$work" "$n" "$sites" "$rows" <<'PY'
import os, random, sys

work, n, sites, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(42)
tables = [("s1", f"t{i}") for i in range(1, 6)] + [("s2", f"big{i}") for i in range(1, 6)]
head = ("------------------------------------------------------------------\n"
        "-- Slony-I log shipping archive\n-- Node 1, Event {ev}\n"
        "------------------------------------------------------------------\n"
        "set session_replication_role to replica;\nstart transaction;\n"
        "select \"_bench\".archiveTracking_offline('{c}', '2026-11-21 22:06:43.093233+00');\n"
        "-- end of log archiving header\n"
        "------------------------------------------------------------------\n"
        "-- start of Slony-I data\n"
        "------------------------------------------------------------------\n"
        "COPY \"_bench\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,"
        "log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n")
tail = ("\n------------------------------------------------------------------\n"
        "-- End Of Archive Log\n"
        "------------------------------------------------------------------\n"
        "commit;\nvacuum analyze \"_bench\".sl_archive_tracking;\n")
seq = 0
total = 0
for c in range(1, n + 1):
    out = [head.format(ev=5000000000 + c, c=c)]
    seqs = []
    if c % 10:
        for r in range(rnd.randint(rows // 2, rows * 3 // 2)):
            seq += 1
            ti = rnd.randrange(len(tables))
            nsp, rel = tables[ti]
            kind = rnd.choice("IIIIUUD")
            val = "it's \\t tab \\n nl \\\\\\\\ bs " + "x" * rnd.randint(20, 300)
            if kind == "I":
                args = f'{{id,{seq},txt,"{val}",num,{seq * 1.25},ts,"2026-11-21 22:02:22+00"}}'
                ncols = 0
            elif kind == "U":
                args = f'{{txt,"{val}",id,{rnd.randint(1, seq)}}}'
                ncols = 1
            else:
                args = f"{{id,{rnd.randint(1, seq)}}}"
                ncols = 0
            out.append(f"1\t{1000 + c}\t{ti + 1}\t{seq}\t{nsp}\t{rel}\t{kind}\t{ncols}\t{args}\n")
        if c % 50 == 0:
            nsp, rel = tables[c % len(tables)]
            out.append(f"1\t{1000 + c}\t\\N\t{seq}\t\\N\t\\N\tS\t\\N\t"
                       f"{{\"alter table {nsp}.{rel} add column c{c} int;\",\"\",\"\"}}\n")
            out.append(f"1\t{1000 + c}\t\\N\t{seq}\t\\N\t\\N\tS\t\\N\t{{\"\\n\",\"\",\"\"}}\n")
            out.append(f"1\t{1000 + c}\t\\N\t{seq}\t\\N\t\\N\ts\t\\N\t{{}}\n")
        seqs = [("s1", "t1_id_seq"), ("s2", "big1_id_seq"), ("s1", "seq1")]
    out.append("\\.\n")
    for nsp, name in seqs:
        out.append(f"select \"_bench\".sequenceSetValue_offline('{nsp}','{name}','{seq}');\n\n")
    out.append(tail)
    text = "".join(out)
    total += len(text)
    name = f"slony1_log_2_{c:020d}.sql"
    with open(os.path.join(work, "archive", name + ".tmp"), "w") as f:
        f.write(text)
    os.rename(os.path.join(work, "archive", name + ".tmp"), os.path.join(work, "archive", name))
for s in range(1, sites + 1):
    d = os.path.join(work, "subscribers", f"site{s:02d}")
    os.makedirs(d)
    chosen = rnd.sample(tables, rnd.randint(1, 6))
    with open(os.path.join(d, "tables"), "w") as f:
        f.write("".join(f"{a}.{b}\n" for a, b in chosen))
    with open(os.path.join(d, "since"), "w") as f:
        f.write("1\n")
with open(os.path.join(work, "input_bytes"), "w") as f:
    f.write(str(total))
PY

cat >"$work/manager.toml" <<EOF
cluster = "bench"
trigger_dir = "triggers"
subscribers_dir = "subscribers"
site_log_dir = "site_logs"
archive_dir = "archive"
[database]
user = "bench"
dbname = "bench"
EOF

bytes=$(cat "$work/input_bytes")
sync
TIMEFORMAT='%R %U %S'
{ time RUST_LOG=warn "$bin" cut --config "$work/manager.toml" >"$work/cut.out" 2>"$work/cut.err"; } 2>"$work/time"
cat "$work/cut.out" "$work/cut.err"
read -r secs user sys <"$work/time"

python3 - "$secs" "$user" "$sys" "$n" "$sites" "$bytes" "$work" <<'PY'
import os, sys
secs, user, sys_t = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
n, sites, size, work = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
copies = sum(len(os.listdir(os.path.join(work, "site_logs", d))) for d in os.listdir(os.path.join(work, "site_logs")))
out = sum(os.path.getsize(os.path.join(work, "site_logs", d, f))
          for d in os.listdir(os.path.join(work, "site_logs"))
          for f in os.listdir(os.path.join(work, "site_logs", d)))
assert copies == n * sites, f"expected {n * sites} site copies, found {copies}"
print(f"cut {n} archives ({size / 1e6:.1f} MB) for {sites} sites in {secs:.2f} s: "
      f"{n / secs:.0f} archives/s, {size / 1e6 / secs:.1f} MB/s of input; "
      f"{copies} copies, {out / 1e6:.1f} MB written, {secs / n * 1000:.2f} ms per archive")
print(f"CPU: user {user:.2f} s, system {sys_t:.2f} s ({user / n * 1000:.2f} ms of user CPU per archive; "
      f"the rest of the wall time is the fsyncs of {copies} copies and their directories)")
PY
