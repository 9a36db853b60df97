# shellcheck shell=bash
# Private servers for the scripts (sourced by demo.sh and bench.sh): a PostgreSQL
# cluster and an sshd on 127.0.0.1, each in a directory of the caller's, started and
# stopped by pid. The caller defines say() and die() and calls stop_servers from its
# EXIT trap.
#
#   find_pg_bin                       sets PG_BIN (PostgreSQL 15, else the newest)
#   start_postgres DIR [-c k=v ...]   sets pg_port; psql() then reaches it
#   start_sshd DIR COMMENT [LINE ...] sets ssh_port, ssh_user; DIR/ssh/client_key,
#                                     DIR/ssh/known_hosts; extra sshd_config lines
#   stop_servers DIR RC               stops both; on RC != 0 shows their last log lines

pg_pid=
pg_runner_pid=
sshd_pid=

is_root() { [[ $(id -u) -eq 0 ]]; }

# Waits (bounded) for a process to exit; returns 1 if it is still there.
wait_gone() {
    local pid=$1 tries=$2
    while kill -0 "$pid" 2>/dev/null && ((tries-- > 0)); do
        sleep 0.1
    done
    ! kill -0 "$pid" 2>/dev/null
}

# A TCP port on 127.0.0.1 that nothing listens on.
free_port() {
    local port tries=50
    while ((tries-- > 0)); do
        port=$((55000 + RANDOM % 5000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found in 55000-59999"
}

find_pg_bin() {
    PG_BIN=${PG_BIN:-}
    if [[ -z $PG_BIN ]]; then
        if [[ -x /usr/lib/postgresql/15/bin/postgres ]]; then
            PG_BIN=/usr/lib/postgresql/15/bin
        else
            PG_BIN=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
        fi
    fi
    [[ -n $PG_BIN && -x $PG_BIN/postgres && -x $PG_BIN/initdb ]] ||
        die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (Debian package postgresql); set PG_BIN"
}

start_postgres() {
    local dir=$1 tries=300
    shift
    local as_pg=()
    mkdir -p "$dir/pgdata" "$dir/pgsock"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (Debian package postgresql creates it)"
        chown postgres: "$dir/pgdata" "$dir/pgsock"
        chmod 0700 "$dir/pgdata"
        as_pg=(runuser -u postgres --)
    fi
    (cd "$dir" && "${as_pg[@]}" "$PG_BIN/initdb" -N -A trust -U postgres -E UTF8 --no-locale \
        -D "$dir/pgdata" >"$dir/initdb.log" 2>&1) || {
        cat "$dir/initdb.log" >&2
        die "initdb failed"
    }
    pg_port=$(free_port)
    (cd "$dir" && exec "${as_pg[@]}" "$PG_BIN/postgres" -D "$dir/pgdata" \
        -c "port=$pg_port" -c listen_addresses=127.0.0.1 \
        -c "unix_socket_directories=$dir/pgsock" "$@" \
        </dev/null >"$dir/postgres.log" 2>&1) &
    pg_runner_pid=$!
    until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres; do
        kill -0 "$pg_runner_pid" 2>/dev/null || die "PostgreSQL exited during start-up (see $dir/postgres.log)"
        ((tries-- > 0)) || die "PostgreSQL not ready after 30 s"
        sleep 0.1
    done
    pg_pid=$(head -n 1 "$dir/pgdata/postmaster.pid")
}

psql() {
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres "$@"
}

start_sshd() {
    local dir=$1 comment=$2 tries=150 line
    shift 2
    [[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd not found (Debian package openssh-server)"
    mkdir -p "$dir/ssh"
    ssh-keygen -q -t ed25519 -N '' -C "$comment host" -f "$dir/ssh/host_key"
    ssh-keygen -q -t ed25519 -N '' -C "$comment client" -f "$dir/ssh/client_key"
    cp "$dir/ssh/client_key.pub" "$dir/ssh/authorized_keys"
    chmod 0600 "$dir/ssh/authorized_keys"
    if is_root && [[ ! -d /run/sshd ]]; then
        mkdir -p /run/sshd && chmod 0755 /run/sshd # privilege separation directory
    fi
    ssh_port=$(free_port)
    cat >"$dir/ssh/sshd_config" <<EOF
Port $ssh_port
ListenAddress 127.0.0.1
HostKey $dir/ssh/host_key
PidFile $dir/ssh/sshd.pid
AuthorizedKeysFile $dir/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
UseDNS no
PrintMotd no
EOF
    for line in "$@"; do
        echo "$line" >>"$dir/ssh/sshd_config"
    done
    # OpenSSH >= 9.8 penalises addresses that connect without logging in.
    if /usr/sbin/sshd -t -f <(cat "$dir/ssh/sshd_config"; echo "PerSourcePenalties no") >/dev/null 2>&1; then
        echo "PerSourcePenalties no" >>"$dir/ssh/sshd_config"
    fi
    /usr/sbin/sshd -D -e -f "$dir/ssh/sshd_config" </dev/null >"$dir/ssh/sshd.log" 2>&1 &
    sshd_pid=$!
    until (exec 3<>"/dev/tcp/127.0.0.1/$ssh_port") 2>/dev/null; do
        kill -0 "$sshd_pid" 2>/dev/null || die "sshd exited during start-up (see $dir/ssh/sshd.log)"
        ((tries-- > 0)) || die "sshd not listening after 15 s"
        sleep 0.1
    done
    printf '[127.0.0.1]:%s %s\n' "$ssh_port" "$(cat "$dir/ssh/host_key.pub")" >"$dir/ssh/known_hosts"
    # shellcheck disable=SC2034 # for the caller
    ssh_user=$(id -un)
}

stop_servers() {
    local dir=$1 rc=$2 log
    if [[ -n $sshd_pid ]] && kill -0 "$sshd_pid" 2>/dev/null; then
        pkill -TERM -P "$sshd_pid" # open sessions first
        kill -TERM "$sshd_pid"
        wait_gone "$sshd_pid" 50 || kill -KILL "$sshd_pid"
    fi
    if [[ -z $pg_pid && -f $dir/pgdata/postmaster.pid ]]; then
        pg_pid=$(head -n 1 "$dir/pgdata/postmaster.pid")
    fi
    if [[ -n $pg_pid ]] && kill -0 "$pg_pid" 2>/dev/null; then
        kill -INT "$pg_pid" # fast shutdown
        wait_gone "$pg_pid" 600 || kill -QUIT "$pg_pid"
        wait_gone "$pg_pid" 50
    fi
    if [[ -n $pg_runner_pid ]] && kill -0 "$pg_runner_pid" 2>/dev/null; then
        kill -TERM "$pg_runner_pid"
    fi
    if ((rc != 0)); then
        for log in "$dir/postgres.log" "$dir/ssh/sshd.log"; do
            if [[ -s $log ]]; then
                printf '\n--- last lines of %s ---\n' "$log" >&2
                tail -n 20 "$log" >&2
            fi
        done
    fi
}
