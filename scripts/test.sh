#!/usr/bin/env bash
# Builds the workspace and runs every test, including the end-to-end tests that
# start a real PostgreSQL, sshd and SMTP server (tests/tests/support/).
#
# Run as root, it first installs the Debian packages those tests need (only
# when one is missing). The e2e tests run the product binaries, so the
# workspace is built before `cargo test`.
#
# Usage: scripts/test.sh [extra args for the test binaries, e.g. a name filter]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

packages=(
    openssh-server
    postgresql
    postgresql-15-slony1-2
    slony1-2-bin
    python3-aiosmtpd
    libssl-dev
    pkg-config
    libclang-dev
    openssl
    libnet-ssh-perl
    libstring-shellquote-perl
)

missing=()
for package in "${packages[@]}"; do
    if ! dpkg -s "$package" >/dev/null 2>&1; then
        missing+=("$package")
    fi
done

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing missing packages: ${missing[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "warning: missing Debian packages: ${missing[*]}" >&2
        echo "warning: run this script as root, or: sudo apt-get install ${missing[*]}" >&2
    fi
fi

cargo build --workspace
scripts/verify-units.sh
cargo test --workspace -- --test-threads=2 "$@"
