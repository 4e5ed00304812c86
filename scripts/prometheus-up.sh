#!/usr/bin/env bash
# Make Debian's promtool (package "prometheus") available for the checks of the shipped
# alerting rules and dashboards. Installs it with apt-get when missing and running as root;
# otherwise says what to do and exits non-zero.
set -euo pipefail
if command -v promtool >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "promtool not installed: run 'apt-get install -y prometheus' as root" >&2
  exit 3
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a Prometheus server; only promtool is wanted here.
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
echo "installed $(promtool --version 2>&1 | head -1)"
