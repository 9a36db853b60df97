#!/usr/bin/env bash
# Random-kill soak of subscription changes (not part of CI): each cycle changes the
# subscription and SIGKILLs `subscribe-series` or `slony-manager run` at a random
# moment, then checks that both sides agree (see tests/tests/subscribe.rs,
# crash_soak_random_kills). Needs what scripts/test.sh needs (PostgreSQL, sshd, root).
#
# Usage: scripts/crash-soak.sh [cycles, default 200] [seed]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export SLONY_SOAK_CYCLES="${1:-200}"
if [ -n "${2:-}" ]; then
    export SLONY_SOAK_SEED="$2"
fi
cargo build --workspace
cargo test -p slony-e2e --test e2e -- --ignored --nocapture subscribe::crash_soak_random_kills
