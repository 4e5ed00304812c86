#!/usr/bin/env bash
# Start a throwaway local Ray head (a one-machine cluster) and print its Jobs API address.
#
# Usage: scripts/ray-up.sh DIR [DASHBOARD_PORT]      (DASHBOARD_PORT defaults to 8265)
#
# Layout under DIR:  t/ (Ray's --temp-dir: sessions, logs, sockets), ray-start.log,
#                    sid (the session id shared by the head's processes; ray-down.sh
#                    stops exactly those), ports (what this head listens on).
# On success the last line on stdout is
#   RAY_ADDRESS=http://127.0.0.1:DASHBOARD_PORT
# printed once the Jobs API answers and the head node is alive. If the head from DIR is
# already running and answering, the address is printed again (with the port it runs on).
# A dead or half-dead head left in DIR is stopped and started afresh.
#
# Ray: $COMPUTENET_RAY_BIN if set (the `ray` executable; point it at a missing file to
# simulate "Ray not installed"), else the repository's .venv/bin/ray, else `ray` on PATH.
# It needs `ray[default]` (the dashboard serves the Jobs API). The head runs with the
# directory of that `ray` first on PATH, so job entrypoints find the same `python`.
#
# Tunables (environment): COMPUTENET_RAY_NUM_CPUS, COMPUTENET_RAY_NUM_GPUS (logical GPUs:
# Ray accepts them on a machine without any and sets CUDA_VISIBLE_DEVICES for jobs that
# ask for them), COMPUTENET_RAY_RESOURCES (JSON), COMPUTENET_RAY_OBJECT_STORE_BYTES
# (default 500000000). The GCS, Ray client and dashboard agent ports are picked free, so
# several heads can run side by side; everything listens on 127.0.0.1 only.
#
# Exit status: 0 ok; 2 bad usage; 3 Ray not available here (one line on stderr says
# why); 1 any other failure (e.g. the dashboard port is taken).
set -euo pipefail

readonly PROG=ray-up.sh
readonly START_TIMEOUT_S=90

die() {
    local code=$1
    shift
    echo "$PROG: $*" >&2
    exit "$code"
}

[[ $# -ge 1 && $# -le 2 ]] || die 2 "usage: $PROG DIR [DASHBOARD_PORT]"
dir_arg=$1
dash_port=${2:-8265}
if ! [[ $dash_port =~ ^[0-9]+$ ]] || ((dash_port < 1 || dash_port > 65535)); then
    die 2 "bad port: $dash_port"
fi
here=$(cd -- "$(dirname -- "$0")" && pwd -P)
repo=$(dirname -- "$here")

# --- locate Ray -------------------------------------------------------------------------
if [[ -n ${COMPUTENET_RAY_BIN:-} ]]; then
    ray_bin=$COMPUTENET_RAY_BIN
    [[ -x $ray_bin && -f $ray_bin ]] \
        || die 3 "Ray not available: COMPUTENET_RAY_BIN=$ray_bin is not an executable file"
elif [[ -x $repo/.venv/bin/ray ]]; then
    ray_bin=$repo/.venv/bin/ray
elif ray_bin=$(command -v ray 2>/dev/null); then
    :
else
    die 3 "Ray not available: no 'ray' in $repo/.venv/bin or on PATH (pip install 'computenet[ray]')"
fi
bindir=$(cd -- "$(dirname -- "$ray_bin")" && pwd -P)
py=$bindir/python
[[ -x $py ]] || py=$(command -v python3) || die 3 "Ray not available: no python next to $ray_bin"
"$py" -c 'import ray, aiohttp, aiohttp_cors' 2>/dev/null \
    || die 3 "Ray not available: $py cannot import ray with its dashboard (install 'ray[default]', not bare 'ray')"
command -v setsid >/dev/null 2>&1 || die 1 "setsid (util-linux) is needed"

export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0
export PATH="$bindir:$PATH"

# --- directories ------------------------------------------------------------------------
mkdir -p -- "$dir_arg"
dir=$(cd -- "$dir_arg" && pwd -P)
tmp=$dir/t
# Ray puts Unix sockets at TEMP/session_<date>_<time>_<pid>/sockets/plasma_store: keep it
# under the 107-byte limit.
((${#tmp} <= 40)) || die 1 "DIR path too long for Ray's Unix sockets ($tmp); use a shorter DIR such as /tmp/cn-ray"

# Live (non-zombie) processes in session $1.
session_pids() {
    local f stat rest state sess
    for f in /proc/[0-9]*/stat; do
        { stat=$(<"$f"); } 2>/dev/null || continue
        rest=${stat##*) }
        read -r state _ _ sess _ <<<"$rest"
        [[ $sess == "$1" && $state != Z ]] && echo "${f//[^0-9]/}"
    done
    return 0
}

# Wait until the Jobs API at port $1 answers for session $2 with a live node.
# Exit 0 ready, 4 another cluster answers there, 1 timeout.
wait_ready() {
    "$py" - "$1" "$2" "$3" <<'EOF'
import json, sys, time, urllib.request
port, session, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
base = f"http://127.0.0.1:{port}"
def get(path):
    with urllib.request.urlopen(base + path, timeout=3) as r:
        return json.load(r)
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        if get("/api/version").get("session_name") != session:
            sys.exit(4)
        get("/api/jobs/")
        nodes = get("/api/v0/nodes?limit=1000&detail=false")["data"]["result"]["result"]
        if any(n.get("state") == "ALIVE" for n in nodes):
            sys.exit(0)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    time.sleep(0.2)
sys.exit(1)
EOF
}

session_name() {
    local link
    link=$(readlink -- "$tmp/session_latest" 2>/dev/null) || return 1
    basename -- "$link"
}

# --- already running? --------------------------------------------------------------------
if [[ -f $dir/sid ]]; then
    sid=$(<"$dir/sid")
    if [[ -n $(session_pids "$sid") ]]; then
        running_port=$(sed -n 's/^dashboard=//p' "$dir/ports" 2>/dev/null || true)
        if [[ -n $running_port ]] && name=$(session_name) \
            && wait_ready "$running_port" "$name" 5; then
            [[ $running_port == "$dash_port" ]] \
                || echo "$PROG: the head in $dir already runs on port $running_port" >&2
            echo "RAY_ADDRESS=http://127.0.0.1:$running_port"
            exit 0
        fi
        echo "$PROG: the head in $dir runs but does not answer; stopping it and starting afresh" >&2
    fi
    "$here/ray-down.sh" "$dir" >&2 || die 1 "could not stop the old head in $dir"
fi

# --- start -------------------------------------------------------------------------------
read -r gcs_port client_port agent_port < <("$py" - "$dash_port" <<'EOF'
import socket, sys
dash = int(sys.argv[1])
try:
    with socket.socket() as s:  # as a server binds it: connections in TIME_WAIT are fine
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", dash))
except OSError:
    sys.exit(f"ray-up.sh: dashboard port {dash} is in use")
socks, ports = [], []
while len(ports) < 3:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
    if s.getsockname()[1] != dash:
        ports.append(s.getsockname()[1])
print(*ports)
EOF
) || exit 1

args=(start --head --disable-usage-stats --node-ip-address=127.0.0.1
    --port="$gcs_port" --ray-client-server-port="$client_port"
    --dashboard-agent-listen-port="$agent_port"
    --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash_port"
    --temp-dir="$tmp" --object-store-memory="${COMPUTENET_RAY_OBJECT_STORE_BYTES:-500000000}")
[[ -z ${COMPUTENET_RAY_NUM_CPUS:-} ]] || args+=(--num-cpus="$COMPUTENET_RAY_NUM_CPUS")
[[ -z ${COMPUTENET_RAY_NUM_GPUS:-} ]] || args+=(--num-gpus="$COMPUTENET_RAY_NUM_GPUS")
[[ -z ${COMPUTENET_RAY_RESOURCES:-} ]] || args+=(--resources="$COMPUTENET_RAY_RESOURCES")

rm -f -- "$dir/sid" "$dir/ports"
mkdir -p -- "$tmp"
# A session of its own: every daemon `ray start` leaves behind shares this session id,
# which is how ray-down.sh finds this head's processes and no other Ray's (`ray stop`
# would stop every Ray on the machine).
cd -- "$dir"
rc=0
setsid -w bash -c 'echo $$ >"$0/sid"; exec "$@"' "$dir" "$ray_bin" "${args[@]}" \
    >"$dir/ray-start.log" 2>&1 </dev/null || rc=$?
fail() {
    tail -n 20 -- "$dir/ray-start.log" >&2 || true
    "$here/ray-down.sh" "$dir" >/dev/null 2>&1 || true
    die 1 "$*; log: $dir/ray-start.log"
}
((rc == 0)) || fail "ray start exited $rc"
name=$(session_name) || fail "ray start left no session in $tmp"
printf 'dashboard=%s\ngcs=%s\nclient=%s\nagent=%s\n' \
    "$dash_port" "$gcs_port" "$client_port" "$agent_port" >"$dir/ports"
rc=0
wait_ready "$dash_port" "$name" "$START_TIMEOUT_S" || rc=$?
((rc != 4)) || fail "another Ray answers on port $dash_port"
((rc == 0)) || fail "the Jobs API on port $dash_port did not answer within $START_TIMEOUT_S s"
echo "RAY_ADDRESS=http://127.0.0.1:$dash_port"
