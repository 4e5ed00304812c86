#!/usr/bin/env bash
# What `computenet up` needs on the host beyond the venv: as root, the gateway isolates every
# task with bubblewrap and refuses to start without it. On a fresh Debian machine, as root
# with apt-get, Debian's bubblewrap is installed here (as make-venv.sh installs python3-venv);
# elsewhere one line says what to install. Not root: tasks run as this user, nothing needed.
set -euo pipefail
[ "$(id -u)" = 0 ] || exit 0
command -v bwrap >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1; then
  echo "installing bubblewrap (isolates each task: its own uid, file system view and network)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }
else
  echo "error: bubblewrap (bwrap) is needed to isolate tasks as root: install it from your distribution" >&2
  exit 1
fi
