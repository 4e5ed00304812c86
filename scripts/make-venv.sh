#!/usr/bin/env bash
# Create the project's virtual environment, with a clear message when Debian's venv
# module is missing (a fresh Debian has python3 but not python3-venv).
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
if [ -z "$python" ] || ! command -v "$python" >/dev/null; then
  echo "error: Python 3.11+ not found; install it (Debian: apt-get install python3)" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $python is $("$python" -V 2>&1); ComputeNet needs Python 3.11 or newer" >&2
  exit 1
fi
if ! "$python" -m venv "$venv" 2>/dev/null; then
  rm -rf "$venv"
  ver=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing python$ver-venv (needed to create the virtual environment)" >&2
    apt-get update -qq && apt-get install -y -qq "python$ver-venv" >/dev/null
    "$python" -m venv "$venv"
  else
    echo "error: cannot create a venv; run: sudo apt-get install python$ver-venv" >&2
    exit 1
  fi
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
