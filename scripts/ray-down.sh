#!/usr/bin/env bash
# Stop a throwaway Ray head started by scripts/ray-up.sh, and check that it is gone.
#
# Usage: scripts/ray-down.sh DIR
#
# Stops only the processes of the head started from DIR (those in the session recorded
# in DIR/sid), never another Ray on the machine: `ray stop` cannot be told which cluster
# to stop. Jobs still running are first stopped through the Jobs API, so their entrypoints
# end their own children. Then, in the order `ray stop` uses, the raylet, the other
# daemons and last the GCS get SIGTERM, and SIGKILL after a grace period.
#
# Does nothing (exit 0) when no head from DIR is running. DIR itself is left in place.
# Exit status: 0 stopped (or nothing to stop); 2 bad usage; 1 processes survived.
set -euo pipefail

readonly PROG=ray-down.sh
readonly GRACE_S=5

[[ $# -eq 1 ]] || {
    echo "usage: $PROG DIR" >&2
    exit 2
}
dir=$(cd -- "$1" 2>/dev/null && pwd -P) || exit 0 # no such directory: nothing to stop
[[ -f $dir/sid ]] || exit 0
sid=$(<"$dir/sid")
[[ $sid =~ ^[0-9]+$ ]] || {
    echo "$PROG: $dir/sid does not hold a session id" >&2
    exit 1
}

# Live (non-zombie) processes in the head's session. With "raylet" or "gcs_server" only
# those; with "rest" all others.
head_pids() {
    local f stat rest comm state sess
    for f in /proc/[0-9]*/stat; do
        { stat=$(<"$f"); } 2>/dev/null || continue
        rest=${stat##*) }
        comm=${stat#*(}
        comm=${comm%) *}
        read -r state _ _ sess _ <<<"$rest"
        [[ $sess == "$sid" && $state != Z ]] || continue
        case $1 in
        rest) [[ $comm == raylet || $comm == gcs_server ]] && continue ;;
        *) [[ $comm == "$1" ]] || continue ;;
        esac
        echo "${f//[^0-9]/}"
    done
    return 0
}

[[ -n $(head_pids rest)$(head_pids raylet)$(head_pids gcs_server) ]] || {
    rm -f -- "$dir/sid"
    exit 0
}

# Stop running jobs politely (their entrypoints then end what they started).
port=$(sed -n 's/^dashboard=//p' "$dir/ports" 2>/dev/null || true)
repo=$(cd -- "$(dirname -- "$0")/.." && pwd -P)
py=python3
[[ -x $repo/.venv/bin/python ]] && py=$repo/.venv/bin/python
if [[ -n $port ]] && command -v "$py" >/dev/null 2>&1; then
    "$py" - "$port" <<'EOF' || true
import json, sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/api/jobs/"
def call(url, method="GET"):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=3) as r:
        return json.load(r)
def live(states):
    return [j["submission_id"] for j in call(base) if j.get("submission_id") and j["status"] in states]
try:
    for sub in live(("PENDING", "RUNNING")):
        call(f"{base}{sub}/stop", "POST")
    # Ray SIGKILLs what a stopped job left 3 s after SIGTERM; a PENDING job never started.
    deadline = time.monotonic() + 5
    while live(("RUNNING",)) and time.monotonic() < deadline:
        time.sleep(0.2)
except (OSError, ValueError, KeyError, TypeError):
    pass
EOF
fi

stop_bucket() {
    local pids
    pids=$(head_pids "$1")
    [[ -n $pids ]] || return 0
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 $((GRACE_S * 10))); do
        [[ -n $(head_pids "$1") ]] || return 0
        sleep 0.1
    done
    pids=$(head_pids "$1")
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
}

stop_bucket raylet
stop_bucket rest
stop_bucket gcs_server

for _ in $(seq 1 50); do
    left=$(head_pids rest)$(head_pids raylet)$(head_pids gcs_server)
    if [[ -z $left ]]; then
        rm -f -- "$dir/sid"
        exit 0
    fi
    sleep 0.1
done
echo "$PROG: processes of the Ray head in $dir survived: $(echo "$left" | tr '\n' ' ')" >&2
exit 1
