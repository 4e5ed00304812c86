#!/usr/bin/env bash
# Start a throwaway S3-compatible server (moto's standalone server) for tests and demos.
#
# Usage: scripts/s3-up.sh DIR [PORT]     (PORT defaults to 59000)
#
# Writes DIR/pid, DIR/port and DIR/s3.log. On success exactly one line goes to stdout:
#   http://127.0.0.1:PORT
# Point clients at it with AWS_ENDPOINT_URL (or FSSPEC_S3_ENDPOINT_URL) and any keys,
# e.g. AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test. Data lives in memory only.
#
# The server is `moto_server` from the venv (`moto[server]`, in the dev extra); set
# COMPUTENET_MOTO_SERVER to another path to use (point it at a missing file to simulate
# "not installed").
# Exit status: 0 ok; 2 bad usage; 3 no S3 server available here; 1 any other failure.
set -euo pipefail

readonly PROG=s3-up.sh
die() {
    local code=$1
    shift
    echo "$PROG: $*" >&2
    exit "$code"
}

[[ $# -ge 1 && $# -le 2 ]] || die 2 "usage: $PROG DIR [PORT]"
dir=$1
port=${2:-59000}
here=$(cd "$(dirname "$0")/.." && pwd)
server=${COMPUTENET_MOTO_SERVER:-$here/.venv/bin/moto_server}
[[ -x $server ]] || die 3 "S3 server not available: $server not found (pip install 'moto[server]')"

mkdir -p "$dir"
if [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "http://127.0.0.1:$(cat "$dir/port")"
    exit 0
fi
"$server" -H 127.0.0.1 -p "$port" >"$dir/s3.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/pid"
echo "$port" >"$dir/port"
for _ in $(seq 1 150); do
    if ! kill -0 "$pid" 2>/dev/null; then
        die 1 "the S3 server exited: $(tail -n 3 "$dir/s3.log")"
    fi
    if curl -sf -o /dev/null "http://127.0.0.1:$port/moto-api/"; then
        echo "http://127.0.0.1:$port"
        exit 0
    fi
    sleep 0.1
done
kill "$pid" 2>/dev/null || true
die 1 "the S3 server did not answer on port $port within 15 s"
