#!/usr/bin/env bash
# What a newcomer's machine sees: a new virtual environment, `pip install .` with no extras,
# every module imported, `computenet up` on a free port, one task run to COMPLETE, the node
# stopped. Run by .ci/run before the test suite, so an undeclared dependency fails CI the way
# it would fail `make up` on a fresh machine (the dev extras bring in far more than a user
# installs). Usage: scripts/clean-install-check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${1:-$(command -v python3.11 || command -v python3)}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/computenet-clean.XXXXXX")
node_pid=""
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -INT "$node_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$node_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$node_pid" 2>/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
step() { printf '[clean install] %s\n' "$*"; }

step "new virtual environment in $scratch/venv"
scripts/make-venv.sh "$python" "$scratch/venv" >/dev/null
venv="$scratch/venv"
step "pip install . (no extras)"
"$venv/bin/pip" install --quiet --disable-pip-version-check . 2>&1 | grep -v "is ignored: it is neither" || true
"$venv/bin/python" -c 'import computenet' || { echo "error: computenet did not install" >&2; exit 1; }

step "import every module"
# Run outside the checkout so `computenet` comes from the installed wheel, not ./src.
(cd "$scratch" && "$venv/bin/python" - <<'EOF'
import importlib
import pkgutil
import sys

import computenet

failed = []
names = [m.name for m in pkgutil.walk_packages(computenet.__path__, "computenet.")]
for name in names:
    try:
        importlib.import_module(name)
    except ImportError as exc:
        failed.append(f"{name}: {exc}")
if failed:
    print("error: modules that a clean install cannot import:", *failed, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"[clean install] {len(names)} modules import")
EOF
)

port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
export XDG_CONFIG_HOME="$scratch/config"  # the client config `up` writes stays in the scratch dir
scripts/up-prereqs.sh  # as `make up` does: bubblewrap, which a root gateway needs
step "computenet up on $url"
"$venv/bin/computenet" up --port "$port" --data-dir "$scratch/data" --cpus 1 >"$scratch/node.log" 2>&1 &
node_pid=$!
for _ in $(seq 1 150); do
  if "$venv/bin/python" -c "import httpx,sys; sys.exit(httpx.get('$url/healthz', timeout=1).status_code != 200)" 2>/dev/null; then
    break
  fi
  kill -0 "$node_pid" 2>/dev/null || { cat "$scratch/node.log" >&2; echo "error: the node exited" >&2; exit 1; }
  sleep 0.2
done

step "submit a task and wait for it"
tid=$("$venv/bin/computenet" submit -- echo clean-install-ok) || { cat "$scratch/node.log" >&2; exit 1; }
state=""
for _ in $(seq 1 150); do
  state=$("$venv/bin/computenet" status "$tid" --json | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["state"])')
  case "$state" in COMPLETE|EXECUTOR_ERROR|SYSTEM_ERROR|CANCELED) break ;; esac
  sleep 0.2
done
logs=$("$venv/bin/computenet" logs "$tid")
if [ "$state" != COMPLETE ] || [[ "$logs" != *clean-install-ok* ]]; then
  cat "$scratch/node.log" >&2
  echo "error: task $tid ended $state with output: $logs" >&2
  exit 1
fi
step "task $tid COMPLETE; stopping the node"
