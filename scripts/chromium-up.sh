#!/usr/bin/env bash
# Make Debian's Chromium available for the console's browser tests. Installs it with apt-get
# when missing and running as root; otherwise says what to do and exits non-zero.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "Chromium not installed: run 'apt-get install -y chromium' as root" >&2
  exit 3
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
echo "installed $(/usr/bin/chromium --version)"
