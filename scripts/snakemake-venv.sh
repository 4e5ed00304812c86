#!/usr/bin/env bash
# Create (once) a separate venv with Snakemake and its TES executor plugin; print its bin dir.
#
# Usage: scripts/snakemake-venv.sh [DIR]     (DIR defaults to .venv-snakemake)
#
# Separate because snakemake-executor-plugin-tes 0.1.x pins py-tes<0.5 while ComputeNet's
# tests use py-tes 1.1; the two cannot share one environment. py-tes 0.4 imports `six`
# without declaring it.
# The workflow's files move through snakemake-storage-plugin-fs (a directory the gateway's
# host sees), which copies with rsync: when rsync is missing and we are root with apt-get,
# Debian's rsync is installed.
# Exit status: 0 ok (one line on stdout: the bin dir); 3 cannot be installed here; 1 other.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$here/.venv-snakemake}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [[ ! -f $dir/.installed ]]; then
    "$python" -m venv "$dir" || { echo "snakemake-venv.sh: cannot create a venv" >&2; exit 3; }
    "$dir/bin/pip" install --quiet --disable-pip-version-check \
        'snakemake>=9.0,<10' 'snakemake-executor-plugin-tes>=0.1.3,<0.2' \
        'snakemake-storage-plugin-fs>=1.1,<2' six >&2 ||
        { echo "snakemake-venv.sh: cannot install snakemake and its TES plugin" >&2; exit 3; }
    touch "$dir/.installed"
fi
if ! command -v rsync >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        apt-get install -y --no-install-recommends rsync >&2 ||
            { echo "snakemake-venv.sh: cannot install rsync" >&2; exit 3; }
    else
        echo "snakemake-venv.sh: rsync is missing (snakemake-storage-plugin-fs needs it)" >&2
        exit 3
    fi
fi
echo "$dir/bin"
