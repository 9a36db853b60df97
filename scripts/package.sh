#!/usr/bin/env bash
# Builds the Debian packages slony-receiver (for the sites) and slony-manager (for the
# provider) into <target>/debian/, where <target> is $CARGO_TARGET_DIR or ./target.
#
# Each package holds its binary, a man page and bash, zsh and fish completions (made by
# running the freshly built binary with its hidden --generate flag), the systemd units
# of etc/systemd (a copy with ExecStart=/usr/bin/... and User=<package>), and the example
# configurations. The metadata is [package.metadata.deb] in receiver/Cargo.toml and
# manager/Cargo.toml; the maintainer scripts are in receiver/debian/ and manager/debian/.
# cargo-deb is installed first if `cargo deb` is missing.
#
# Usage: scripts/package.sh [--profile PROFILE] [--check]
#
#   --profile PROFILE  the Cargo profile to build and package (default: release). CI uses
#                      `dev`, the build its tests already made: the same package, with an
#                      unoptimised binary (stripped, as always).
#   --check            (root only) then install both packages with apt-get, check the
#                      binaries, the man pages, the accounts and the units, purge the
#                      packages and check that the binaries are gone. Refused when either
#                      package is installed already, since the check removes them.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The cargo-deb installed when `cargo deb` is missing. Pinned: CI packages the dev
# profile, which cargo-deb 3.8 accepts with a warning and a later release may refuse.
cargo_deb_version=3.8.0
packages=(slony-receiver slony-manager)

die() {
    echo "package.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

profile=release
check=false
while (($# > 0)); do
    case $1 in
    --profile)
        (($# > 1)) || die "--profile needs a value"
        profile=$2
        shift 2
        ;;
    --profile=*)
        profile=${1#--profile=}
        shift
        ;;
    --check)
        check=true
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
done

if $check; then
    [[ $(id -u) -eq 0 ]] || die "--check installs and removes the packages: run it as root"
    command -v apt-get >/dev/null || die "--check needs apt-get (Debian or Ubuntu)"
    for package in "${packages[@]}"; do
        if dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q ' installed$'; then
            die "$package is installed on this machine; --check would remove it"
        fi
    done
fi

target=${CARGO_TARGET_DIR:-target}
case $profile in
dev) profile_dir=debug ;;
*) profile_dir=$profile ;;
esac
out_dir="$target/debian"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "installing cargo-deb $cargo_deb_version" >&2
    # Built in a directory of its own, not in this workspace's target directory.
    env -u CARGO_TARGET_DIR cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

# The whole workspace, as scripts/test.sh builds it: with the dev profile, after the
# tests, this finds everything built already (a build of two packages alone could
# unify features differently and rebuild dependencies).
cargo build --workspace --profile "$profile"

# The generated assets, where the [package.metadata.deb] assets name them
# (target/release/deb-assets/... in Cargo.toml stands for $target/$profile_dir/...).
make_assets() {
    local package=$1
    local binary="$target/$profile_dir/$package"
    local assets="$target/$profile_dir/deb-assets/$package"
    rm -rf "$assets"
    mkdir -p "$assets/completions" "$assets/systemd"

    # Gzipped here: cargo-deb compresses man pages of the source tree, not those it
    # finds in the target directory.
    "$binary" --generate man | gzip -9n >"$assets/$package.1.gz"
    "$binary" --generate complete-bash >"$assets/completions/$package"
    "$binary" --generate complete-zsh >"$assets/completions/_$package"
    "$binary" --generate complete-fish >"$assets/completions/$package.fish"

    # The units in etc/systemd are written for a hand install (/usr/local/bin, an
    # account of the administrator's choice); the package's run /usr/bin/<package>
    # as the account its postinst creates.
    local unit units=()
    for unit in etc/systemd/"$package".* etc/systemd/"$package"-*.*; do
        [[ -e $unit ]] && units+=("$unit")
    done
    ((${#units[@]} > 0)) || die "no systemd units for $package in etc/systemd"
    for unit in "${units[@]}"; do
        {
            echo "# Installed by the $package package, from $unit:"
            echo "# /usr/bin/$package, as the account $package."
            echo "# Change it with: systemctl edit ${unit##*/}"
            echo "#"
            sed -e "s|/usr/local/bin/|/usr/bin/|g" -e "s|^User=.*|User=$package|" "$unit"
        } >"$assets/systemd/${unit##*/}"
    done
    if grep -q /usr/local/ "$assets"/systemd/*; then
        die "a packaged unit of $package still names /usr/local: $(grep -l /usr/local/ "$assets"/systemd/*)"
    fi
    if [[ $package == slony-receiver ]]; then
        sed -e "s|/usr/local/bin/|/usr/bin/|g" etc/crontab.example >"$assets/crontab.example"
    fi
}

deb_args=(--no-build --profile "$profile" --strip --output "$out_dir/")
if [[ $profile_dir != release ]]; then
    # A package to check, not to ship: compress it quickly.
    deb_args+=(--fast)
fi
if [[ -n ${DEB_MAINTAINER:-} ]]; then
    deb_args+=(--maintainer "$DEB_MAINTAINER")
fi

declare -A deb_file
mkdir -p "$out_dir"
for package in "${packages[@]}"; do
    make_assets "$package"
    # cargo deb prints the path of the package it wrote.
    deb_file[$package]=$(cargo deb -p "$package" "${deb_args[@]}" | tail -n 1)
    [[ -f ${deb_file[$package]} ]] || die "cargo deb -p $package wrote no package"
    echo "built ${deb_file[$package]}"
done

$check || exit 0

# ---- --check: install, look, purge ------------------------------------------------

export DEBIAN_FRONTEND=noninteractive
created_accounts=()
installed=false

# On any exit: the packages purged if a failed check left them, and the accounts that
# the check made removed (the packages keep theirs on purge, see debian/postrm), so
# that the machine is as it was.
cleanup() {
    if $installed; then
        apt-get purge -y "${packages[@]}" >/dev/null 2>&1 || true
    fi
    local account
    for account in "${created_accounts[@]}"; do
        if getent passwd "$account" >/dev/null; then
            userdel "$account" || true
        fi
        if getent group "$account" >/dev/null; then
            groupdel "$account" || true
        fi
    done
}
trap cleanup EXIT

fail() {
    echo "package.sh --check: FAILED: $*" >&2
    exit 1
}

for package in "${packages[@]}"; do
    getent passwd "$package" >/dev/null || created_accounts+=("$package")
done

installed=true
apt-get install -y --no-install-recommends "$(realpath "${deb_file[slony-receiver]}")" \
    "$(realpath "${deb_file[slony-manager]}")"

for package in "${packages[@]}"; do
    [[ $(command -v "$package") == /usr/bin/$package ]] || fail "$package is not /usr/bin/$package"
    "$package" --version || fail "$package --version"
    getent passwd "$package" >/dev/null || fail "no account $package"
    getent group "$package" >/dev/null || fail "no group $package"
    [[ -d /var/lib/$package && $(stat -c %U "/var/lib/$package") == "$package" ]] ||
        fail "/var/lib/$package is missing or not $package's"
    [[ -d /etc/$package && $(stat -c %G "/etc/$package") == "$package" ]] ||
        fail "/etc/$package is missing or not in group $package"
    for unit in $(dpkg -L "$package" | grep '^/usr/lib/systemd/system/.*\.service$'); do
        grep -q "^ExecStart=/usr/bin/$package " "$unit" || fail "$unit does not run /usr/bin/$package"
        grep -qx "User=$package" "$unit" || fail "$unit does not run as $package"
    done
    for file in "/usr/share/bash-completion/completions/$package" \
        "/usr/share/zsh/vendor-completions/_$package" \
        "/usr/share/fish/vendor_completions.d/$package.fish"; do
        [[ -s $file ]] || fail "$file is missing"
    done
    bash -n "/usr/share/bash-completion/completions/$package" || fail "bash completion syntax"
    if command -v zsh >/dev/null; then
        zsh -n "/usr/share/zsh/vendor-completions/_$package" || fail "zsh completion syntax"
    fi
    if command -v fish >/dev/null; then
        fish -n "/usr/share/fish/vendor_completions.d/$package.fish" || fail "fish completion syntax"
    fi
done

# The packaged units, as systemd reads them (it needs no running systemd for this).
if command -v systemd-analyze >/dev/null; then
    mapfile -t units < <(dpkg -L "${packages[@]}" | grep '^/usr/lib/systemd/system/')
    systemd-analyze verify "${units[@]}" || fail "systemd-analyze verify ${units[*]}"
    echo "systemd-analyze verify: ${#units[@]} units ok"
else
    echo "systemd-analyze not found: the units were not verified" >&2
fi

# The man pages. Minimal Debian images often exclude /usr/share/man from every package
# (path-exclude in /etc/dpkg/dpkg.cfg.d/): then dpkg silently drops the pages, so they
# are read from the .deb instead, and the exclusion is said.
if ! command -v man >/dev/null; then
    apt-get install -y --no-install-recommends man-db
fi
man_excluded=$(grep -lsE '^[[:space:]]*path-exclude[= ]+/usr/share/man' /etc/dpkg/dpkg.cfg.d/* || true)
if [[ -n $man_excluded ]]; then
    echo "note: dpkg drops every man page on this machine (path-exclude in" \
        "$man_excluded), so 'man slony-receiver' cannot work here: the pages are" \
        "checked from the packages instead" >&2
fi
for package in "${packages[@]}"; do
    if [[ -n $man_excluded ]]; then
        extracted=$(mktemp -d)
        dpkg-deb -x "${deb_file[$package]}" "$extracted"
        page=$(MANWIDTH=80 man -P cat -l "$extracted/usr/share/man/man1/$package.1.gz")
        rm -rf "$extracted"
    else
        [[ -f /usr/share/man/man1/$package.1.gz ]] || fail "/usr/share/man/man1/$package.1.gz is missing"
        page=$(MANWIDTH=80 man -P cat "$package")
    fi
    head -n 12 <<<"$page"
    grep -q '^COMMANDS' <<<"$page" || fail "man $package has no COMMANDS section"
    grep -qE "^ +$package [a-z]" <<<"$page" || fail "man $package lists no subcommand"
done

installed=false
apt-get purge -y "${packages[@]}"
hash -r
for package in "${packages[@]}"; do
    [[ ! -e /usr/bin/$package ]] || fail "/usr/bin/$package is still there after the purge"
    ! command -v "$package" >/dev/null || fail "$package is still on PATH after the purge"
    [[ ! -e /var/lib/$package ]] || fail "/var/lib/$package is still there after the purge"
    [[ ! -e /etc/$package ]] || fail "/etc/$package (empty) is still there after the purge"
    [[ -z $(compgen -G "/usr/lib/systemd/system/$package*") ]] ||
        fail "units of $package are still there after the purge"
done

echo "package.sh --check: ok (${deb_file[*]})"
