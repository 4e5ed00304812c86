#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for tests and print its SQLAlchemy URL.
#
# Usage: scripts/pg-up.sh DIR [PORT]        (PORT defaults to 55432)
#
# Layout under DIR:  data/ (the cluster), sock/ (Unix socket), postgres.log,
#                    port and bindir (recorded for pg-up.sh / pg-down.sh).
# On success exactly one line goes to stdout:
#   postgresql+psycopg://postgres@127.0.0.1:PORT/computenet
# If a server from DIR is already running and answering, that URL is printed again
# (with the port it runs on). A stopped cluster left in DIR is wiped and re-initialised:
# the server is throwaway, nothing in it is kept.
#
# Binaries: $COMPUTENET_PG_BINDIR if set (and only that directory; point it at a
# missing directory to simulate "PostgreSQL not installed"), else the directory of
# pg_ctl on PATH, else the newest /usr/lib/postgresql/*/bin.
# If none is found and COMPUTENET_INSTALL_PG=1, running as root with apt-get, Debian's
# `postgresql` package is installed first.
#
# When run as root, the cluster is owned by and run as user `postgres`; DIR and its
# parents must then be traversable by that user (anything under /tmp is).
#
# Exit status: 0 ok; 2 bad usage; 3 PostgreSQL not available here (one line on
# stderr says why); 1 any other failure.
set -euo pipefail

readonly PROG=pg-up.sh
readonly DBNAME=computenet
readonly PGUSER_NAME=postgres

die() {
    local code=$1
    shift
    echo "$PROG: $*" >&2
    exit "$code"
}

[[ $# -ge 1 && $# -le 2 ]] || die 2 "usage: $PROG DIR [PORT]"
dir_arg=$1
port=${2:-55432}
if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    die 2 "bad port: $port"
fi

is_root=0
if [[ $(id -u) -eq 0 ]]; then
    is_root=1
fi

# --- locate the PostgreSQL binaries -------------------------------------------------
bindir_ok() {
    local d=$1 b
    for b in initdb pg_ctl postgres pg_isready psql; do
        [[ -x $d/$b ]] || return 1
    done
}

find_bindir() {
    local d candidates=()
    if [[ -n ${COMPUTENET_PG_BINDIR:-} ]]; then
        candidates=("$COMPUTENET_PG_BINDIR")
    else
        if d=$(command -v pg_ctl 2>/dev/null); then
            candidates+=("$(dirname "$(readlink -f "$d")")")
        fi
        # Newest major version first.
        while IFS= read -r d; do
            [[ -n $d ]] && candidates+=("$d")
        done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV || true)
    fi
    for d in ${candidates[@]+"${candidates[@]}"}; do
        if bindir_ok "$d"; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

if ! bindir=$(find_bindir); then
    if [[ -z ${COMPUTENET_PG_BINDIR:-} && ${COMPUTENET_INSTALL_PG:-} == 1 && $is_root -eq 1 ]] \
        && command -v apt-get >/dev/null 2>&1; then
        echo "$PROG: installing Debian's postgresql package" >&2
        {
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql
        } >&2 || die 3 "PostgreSQL not available: apt-get install postgresql failed"
        bindir=$(find_bindir) || die 3 "PostgreSQL not available: installed, but no binaries found"
    elif [[ -n ${COMPUTENET_PG_BINDIR:-} ]]; then
        die 3 "PostgreSQL not available: no initdb/pg_ctl/postgres/pg_isready/psql in COMPUTENET_PG_BINDIR=$COMPUTENET_PG_BINDIR"
    else
        die 3 "PostgreSQL not available: no server binaries on PATH or in /usr/lib/postgresql/*/bin (install it, or set COMPUTENET_INSTALL_PG=1 as root on Debian)"
    fi
fi

if ((is_root)); then
    id -u "$PGUSER_NAME" >/dev/null 2>&1 \
        || die 3 "PostgreSQL not available: running as root but there is no '$PGUSER_NAME' user to run the server"
    command -v runuser >/dev/null 2>&1 || die 1 "running as root needs runuser (util-linux)"
fi

# Run a command as the cluster owner: `postgres` when root, else the current user.
as_pg() {
    if ((is_root)); then
        runuser -u "$PGUSER_NAME" -- "$@"
    else
        "$@"
    fi
}

# --- directories ----------------------------------------------------------------------
mkdir -p -- "$dir_arg"
dir=$(cd -- "$dir_arg" && pwd -P)
data=$dir/data
sock=$dir/sock
log=$dir/postgres.log
# Run everything from a directory the server user can enter.
cd -- "$dir" || exit 1

url_for() { echo "postgresql+psycopg://postgres@127.0.0.1:$1/$DBNAME"; }

ensure_db() {
    local p=$1 exists
    exists=$("$bindir/psql" -X -q -h "$sock" -p "$p" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DBNAME'")
    if [[ $exists != 1 ]]; then
        "$bindir/psql" -X -q -h "$sock" -p "$p" -U postgres -d postgres \
            -c "CREATE DATABASE $DBNAME" >/dev/null
    fi
}

# --- already running? ------------------------------------------------------------------
if [[ -f $data/PG_VERSION ]] && as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    running_port=$(cat "$dir/port" 2>/dev/null || echo "$port")
    for _ in $(seq 1 50); do
        if "$bindir/pg_isready" -q -h "$sock" -p "$running_port"; then
            [[ $running_port == "$port" ]] \
                || echo "$PROG: server in $dir already runs on port $running_port" >&2
            ensure_db "$running_port"
            url_for "$running_port"
            exit 0
        fi
        sleep 0.2
    done
    echo "$PROG: server in $dir runs but does not answer; stopping it and starting afresh" >&2
    as_pg "$bindir/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
fi

# --- fresh cluster -----------------------------------------------------------------------
if [[ -e $data ]]; then
    if [[ -f $data/PG_VERSION ]]; then
        rm -rf -- "$data"
    elif [[ -n $(ls -A -- "$data") ]]; then
        die 1 "$data exists, is not empty and is not a PostgreSQL cluster; refusing to touch it"
    fi
fi

# Unix socket paths are limited to 107 bytes (".s.PGSQL.NNNNN" is appended).
sock_path="$sock/.s.PGSQL.$port"
((${#sock_path} <= 107)) || die 1 "DIR path too long for a Unix socket ($sock_path); use a shorter DIR"

mkdir -p -- "$sock"
rm -f -- "$log" "$dir/port"
if ((is_root)); then
    chown "$PGUSER_NAME:" "$dir" "$sock"
    runuser -u "$PGUSER_NAME" -- test -w "$dir" \
        || die 1 "user $PGUSER_NAME cannot reach $dir: its parent directories must be traversable (o+x); use a DIR under /tmp"
fi
chmod 0755 "$dir" "$sock"

if ! out=$(as_pg "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions 2>&1); then
    echo "$out" >&2
    die 1 "initdb failed"
fi

as_pg tee -a "$data/postgresql.conf" >/dev/null <<EOF

# --- added by scripts/pg-up.sh (throwaway test server) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$sock'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF

if ! as_pg "$bindir/pg_ctl" -D "$data" -l "$log" -w -t 60 start >/dev/null 2>&1; then
    if [[ -f $log ]]; then
        tail -n 20 -- "$log" >&2
    fi
    die 1 "pg_ctl start failed (port $port in use?); log: $log"
fi

echo "$port" >"$dir/port"
echo "$bindir" >"$dir/bindir"
ensure_db "$port"
url_for "$port"
