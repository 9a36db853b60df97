#!/usr/bin/env bash
# Random-kill soak of subscription changes (not part of CI), with the manager cutting the
# sites' streams from slon's archive directory: before each cycle slon writes 0-2
# archives; then site1 adds or unsubscribes (with allow_drop) a table, caught up or
# behind, or the change is made to fail on the replica (1 in 8), or a new site subscribes
# for the first time (1 in 10); meanwhile `subscribe-series` or `slony-manager run` is
# SIGKILLed at a random moment. After every cycle the change must be applied exactly once
# on both sides or rolled back on both, `pull --once` must bring the replica to the
# newest archive, equal to the provider on its tables, and the site's stream must be
# contiguous, each archive cut with the list in effect for its counter (see
# tests/tests/subscribe.rs, crash_soak_random_kills). Prints the seed first and the
# figures last. Needs what scripts/test.sh needs (PostgreSQL, sshd, root).
#
# Usage: scripts/crash-soak.sh [cycles, default 260] [seed]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SLONY_SOAK_CYCLES="${1:-260}"
if [ -n "${2:-}" ]; then
    export SLONY_SOAK_SEED="$2"
fi
cargo build --workspace
cargo test -p slony-e2e --test e2e -- --ignored --nocapture subscribe::crash_soak_random_kills
