#!/usr/bin/env bash
# Stop the S3 server that scripts/s3-up.sh started in DIR (by its own pid file).
set -euo pipefail
[[ $# -eq 1 ]] || { echo "usage: s3-down.sh DIR" >&2; exit 2; }
pidfile=$1/pid
[[ -f $pidfile ]] || exit 0
pid=$(cat "$pidfile")
kill "$pid" 2>/dev/null || true
for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill -9 "$pid" 2>/dev/null || true
rm -f "$pidfile"
