#!/usr/bin/env python3
"""The latency run of scripts/bench.sh: archives appear one at a time, how long until
the pull daemon has applied each.

    latency.py write SRC DST N POLL SEED OUT
        places archives 1..N of SRC into DST one at a time, after a random pause of
        0 to 2 x POLL seconds before each (random.Random(SEED)); each is written under
        a temporary name outside the archive pattern (.tmp-<name>) and renamed into
        place; OUT gets one line per archive: "<counter> <time of the rename, epoch s>".
    latency.py report LOG OUT N
        reads the daemon's log (RUST_LOG=slony_receiver=debug: one
        "<RFC 3339 time> DEBUG applied counter=<n> ..." line per archive committed) and
        OUT; prints "n median p90 p99 max" of applied time - rename time, in seconds
        (nearest-rank percentiles). Fails if an archive of 1..N was not applied.
"""
import datetime
import math
import os
import random
import re
import sys
import time

APPLIED = re.compile(r"^(\S+)\s+DEBUG\b.*?\bapplied counter=(\d+)\b")


def name(c):
    return f"slony1_log_2_{c:020d}.sql"


def write(src, dst, n, poll, seed, out):
    rnd = random.Random(seed)
    with open(out, "w") as log:
        for c in range(1, n + 1):
            time.sleep(rnd.uniform(0, 2 * poll))
            with open(os.path.join(src, name(c)), "rb") as f:
                data = f.read()
            tmp = os.path.join(dst, ".tmp-" + name(c))
            with open(tmp, "wb") as f:
                f.write(data)
            os.rename(tmp, os.path.join(dst, name(c)))
            log.write(f"{c} {time.time():.6f}\n")
            log.flush()


def applied_times(path):
    got = {}
    with open(path, errors="replace") as f:
        for line in f:
            m = APPLIED.match(line)
            if m:
                ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                got.setdefault(int(m.group(2)), ts.timestamp())
    return got


def report(log, out, n):
    applied = applied_times(log)
    lat = []
    with open(out) as f:
        for line in f:
            c, t = line.split()
            c = int(c)
            if c not in applied:
                sys.exit(f"latency: archive {c} has no 'applied' line in {log}")
            lat.append(applied[c] - float(t))
    if len(lat) != n:
        sys.exit(f"latency: {len(lat)} archives placed, expected {n}")
    lat.sort()

    def pct(p):
        return lat[max(0, math.ceil(p * len(lat)) - 1)]

    print(f"{len(lat)} {pct(0.5):.3f} {pct(0.9):.3f} {pct(0.99):.3f} {lat[-1]:.3f}")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "write":
        src, dst, n, poll, seed, out = args
        write(src, dst, int(n), float(poll), int(seed), out)
    elif cmd == "report":
        log, out, n = args
        report(log, out, int(n))
    else:
        sys.exit(f"latency.py: unknown command {cmd}")


if __name__ == "__main__":
    main()
