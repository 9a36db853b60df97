#!/usr/bin/env python3
"""Writes the benchmark's Slony-I 2.2 archives (used by scripts/bench.sh).

    gen_archives.py small DIR N       N small archives (workload 1, the 100k backlog,
                                      the WAN sample, the latency run)
    gen_archives.py bulk DIR N        N archives of about 1 MB (workload 2)
    gen_archives.py big DIR MB        one archive of MB megabytes (workload 3)
    gen_archives.py batches SRC DST   SRC's archives packed in tar.gz batches of 5000
                                      (slony_logs_<from>-<to>.tar.gz), as the
                                      provider's housekeeping leaves them
    options: --cluster NAME (default bench)

Each archive is COPY into "_<cluster>".sl_log_archive, exactly as slon writes it, named
slony1_log_2_<20 digits>.sql, counters from 1. Every kind is deterministic (a seed of
its own), and archive c does not depend on how many come after it: the first k archives
of `small DIR N` are the same files for every N >= k, so runs on different counts of
the same kind can be compared on their common part. Prints the total size in bytes.
"""
import argparse
import os
import random
import sys
import tarfile

DASHES = "-" * 66 + "\n"
BATCH = 5000


class Writer:
    def __init__(self, cluster):
        self.cluster = cluster

    def head(self, c):
        return (f"{DASHES}-- Slony-I log shipping archive\n-- Node 1, Event {5000000000 + c}\n{DASHES}"
                "set session_replication_role to replica;\nstart transaction;\n"
                f"select \"_{self.cluster}\".archiveTracking_offline('{c}', "
                f"'2026-11-22 {(c // 3600) % 24:02d}:{(c // 60) % 60:02d}:{c % 60:02d}.093233+00');\n"
                f"-- end of log archiving header\n{DASHES}-- start of Slony-I data\n{DASHES}"
                f"COPY \"_{self.cluster}\".\"sl_log_archive\" ( log_origin, log_txid,log_tableid,log_actionseq,"
                "log_tablenspname, log_tablerelname, log_cmdtype, log_cmdupdncols,log_cmdargs) FROM STDIN;\n")

    def tail(self, seqs):
        out = "\\.\n"
        for name, value in seqs:
            out += f"select \"_{self.cluster}\".sequenceSetValue_offline('s1','{name}','{value}');\n\n"
        return (out + f"\n{DASHES}-- End Of Archive Log\n{DASHES}commit;\n"
                f"vacuum analyze \"_{self.cluster}\".sl_archive_tracking;\n")


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


def write(d, c, text):
    data = text.encode()
    with open(os.path.join(d, name(c)), "wb") as f:
        f.write(data)
    return len(data)


def small(w, d, n):
    """A third idle SYNCs (empty COPY), the rest 1 to 5 row changes on s1.t1 and s1.t2
    and a sequence call."""
    rnd = random.Random(7)
    seq, t1_ids, total = 0, [], 0
    for c in range(1, n + 1):
        parts, seqs = [w.head(c)], []
        if c % 3:
            for _ in range(rnd.randint(1, 5)):
                seq += 1
                k = rnd.random()
                if k < 0.5 or not t1_ids:
                    t1_ids.append(seq)
                    parts.append(row(c, seq, 1, "t1", "I", 0,
                                     [("id", str(seq)), ("txt", f"row {seq} it's a\ttab"),
                                      ("num", f"{seq * 1.25}"), ("ts", "2026-11-22 10:00:00+00")]))
                elif k < 0.7:
                    parts.append(row(c, seq, 1, "t1", "U", 1,
                                     [("txt", f"upd \"{seq}\""), ("id", str(rnd.choice(t1_ids)))]))
                elif k < 0.8:
                    victim = t1_ids.pop(rnd.randrange(len(t1_ids)))
                    parts.append(row(c, seq, 1, "t1", "D", 0, [("id", str(victim))]))
                else:
                    parts.append(row(c, seq, 2, "t2", "I", 0,
                                     [("k", f"k{seq}"), ("v", None if seq % 7 == 0 else str(seq))]))
            seqs = [("seq1", seq)]
        parts.append(w.tail(seqs))
        total += write(d, c, "".join(parts))
    return total


class Bulk:
    """~1 MB archives of inserts (85 %), updates (10 %) and deletes (5 %) into s1.bulk."""

    def __init__(self, w, seed):
        self.w = w
        self.rnd = random.Random(seed)
        self.seq = 0          # action sequence and insert id
        self.deleted = 0      # ids <= deleted are gone

    def archive(self, c, target):
        rnd = self.rnd
        parts, size = [self.w.head(c)], 0
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
        parts.append(self.w.tail([("bulk_id_seq", self.seq)]))
        return "".join(parts)


def bulk(w, d, n):
    b, total = Bulk(w, 8), 0
    for c in range(1, n + 1):
        total += write(d, c, b.archive(c, 1_000_000))
    return total


def big(w, d, mb):
    b = Bulk(w, 9)
    path = os.path.join(d, name(1))
    with open(path, "w") as f:
        # Written in pieces: the generator must not need the whole archive in memory either.
        text = b.archive(1, 1)
        f.write(text[: text.index("\\.\n")])
        size = 0
        while size < mb * 1_000_000:
            chunk = b.archive(1, min(4_000_000, mb * 1_000_000 - size))
            body = chunk[chunk.index("FROM STDIN;\n") + 12: chunk.index("\\.\n")]
            f.write(body)
            size += len(body)
        f.write(w.tail([("bulk_id_seq", b.seq)]))
    return os.path.getsize(path)


def batches(src, dst):
    names = sorted(f for f in os.listdir(src) if f.startswith("slony1_log_") and f.endswith(".sql"))
    total = 0
    for i in range(0, len(names), BATCH):
        chunk = names[i:i + BATCH]
        first, last = (int(n.split("_")[-1][:-4]) for n in (chunk[0], chunk[-1]))
        with tarfile.open(os.path.join(dst, f"slony_logs_{first}-{last}.tar.gz"), "w:gz",
                          format=tarfile.USTAR_FORMAT) as t:
            for n in chunk:
                t.add(os.path.join(src, n), arcname=n)
                total += os.path.getsize(os.path.join(src, n))
    return total


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cluster", default="bench")
    p.add_argument("kind", choices=["small", "bulk", "big", "batches"])
    p.add_argument("dir")
    p.add_argument("arg")
    a = p.parse_args()
    w = Writer(a.cluster)
    if a.kind == "batches":
        os.makedirs(a.arg, exist_ok=True)
        total = batches(a.dir, a.arg)
    else:
        os.makedirs(a.dir, exist_ok=True)
        total = {"small": small, "bulk": bulk, "big": big}[a.kind](w, a.dir, int(a.arg))
    print(total)


if __name__ == "__main__":
    sys.exit(main())
