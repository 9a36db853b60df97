#!/usr/bin/env bash
# Checks the systemd units in etc/systemd with `systemd-analyze verify`, which
# reports unknown keys and bad values as warnings with exit code 0: any line it
# prints fails this script. ExecStart= is pointed at the built binaries, since
# verify also checks that the program exists. Skipped (with a note) where
# systemd-analyze is missing.
#
# Usage: scripts/verify-units.sh   (after cargo build --workspace)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-units: systemd-analyze not found; units not checked" >&2
    exit 0
fi

bin_dir=${CARGO_TARGET_DIR:-$PWD/target}/debug
for binary in slony-receiver slony-manager; do
    [[ -x $bin_dir/$binary ]] || { echo "verify-units: $bin_dir/$binary missing: run cargo build --workspace" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp etc/systemd/*.service etc/systemd/*.timer "$work/"
sed -i "s#/usr/local/bin/#$bin_dir/#g" "$work"/*.service

# The daemons speak sd_notify: their units must say so, and have a watchdog.
for daemon in slony-receiver slony-manager; do
    unit=$work/$daemon.service
    grep -qx 'Type=notify' "$unit" || { echo "verify-units: $daemon.service is not Type=notify" >&2; exit 1; }
    grep -q '^WatchdogSec=' "$unit" || { echo "verify-units: $daemon.service has no WatchdogSec=" >&2; exit 1; }
done

out=$(systemd-analyze verify "$work"/*.service "$work"/*.timer 2>&1) || { echo "$out" >&2; exit 1; }
if [[ -n $out ]]; then
    echo "verify-units: systemd-analyze verify reported:" >&2
    echo "$out" >&2
    exit 1
fi
echo "verify-units: $(find "$work" -name '*.service' -o -name '*.timer' | wc -l) units verified"
