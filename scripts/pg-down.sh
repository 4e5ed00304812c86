#!/usr/bin/env bash
# Stop a throwaway PostgreSQL server started by scripts/pg-up.sh.
#
# Usage: scripts/pg-down.sh DIR
#
# Does nothing (exit 0) when no server from DIR is running. DIR itself is left in place.
set -euo pipefail

readonly PROG=pg-down.sh

[[ $# -eq 1 ]] || {
    echo "usage: $PROG DIR" >&2
    exit 2
}
# Absolute path: the commands below run from inside DIR.
dir=$(cd -- "$1" 2>/dev/null && pwd -P) || exit 0 # no such directory: nothing to stop
data=$dir/data

[[ -f $data/PG_VERSION ]] || exit 0 # no cluster there: nothing to stop

# pg-up.sh records the binaries it used; fall back to the usual places.
bindir=
if [[ -r $dir/bindir ]]; then
    bindir=$(cat -- "$dir/bindir")
fi
if [[ -z $bindir || ! -x $bindir/pg_ctl ]]; then
    if p=$(command -v pg_ctl 2>/dev/null); then
        bindir=$(dirname "$(readlink -f "$p")")
    else
        bindir=$(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV | head -n 1 || true)
    fi
fi
[[ -n $bindir && -x $bindir/pg_ctl ]] || {
    echo "$PROG: pg_ctl not found; cannot stop the server in $dir" >&2
    exit 1
}

as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cd -- "$dir" || exit 1
if as_pg "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    as_pg "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >/dev/null
fi
