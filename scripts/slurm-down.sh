#!/usr/bin/env bash
# Stop a throwaway Slurm cluster started by scripts/slurm-up.sh.
#
# Usage: scripts/slurm-down.sh DIR
#
# Cancels the cluster's jobs (so no job step outlives it), then stops slurmd, slurmctld and
# munged by the pid files under DIR/run: SIGTERM, then SIGKILL after 10 s. Process state is
# read with `ps -o stat=` because zombies are reaped late here and still answer `kill -0`.
# Does nothing (exit 0) when nothing from DIR runs. DIR itself is left in place.
set -euo pipefail

readonly PROG=slurm-down.sh
readonly STOP_TIMEOUT_S=10

[[ $# -eq 1 && -n $1 ]] || {
    echo "usage: $PROG DIR" >&2
    exit 2
}
dir=$(cd -- "$1" 2>/dev/null && pwd -P) || exit 0 # no such directory: nothing to stop
run=$dir/run
[[ -d $run ]] || exit 0
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export SLURM_CONF=$dir/etc/slurm.conf

pid_of() {
    local pid
    [[ -r $run/$1.pid ]] || return 1
    pid=$(<"$run/$1.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    echo "$pid"
}

alive_pid() {
    local stat
    stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $stat && $stat != Z* ]]
}

# Jobs first, while the controller still answers: their steps would outlive slurmd.
if pid=$(pid_of slurmctld) && alive_pid "$pid" && [[ -f $SLURM_CONF ]]; then
    jobs=$(timeout 10 squeue -h -o %A 2>/dev/null || true)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086 # one word per job id
        timeout 10 scancel $jobs >/dev/null 2>&1 || true
        for _ in $(seq 1 50); do
            [[ -z $(timeout 10 squeue -h -t R,CG,S -o %A 2>/dev/null || true) ]] && break
            sleep 0.2
        done
    fi
fi

status=0
for name in slurmd slurmctld munged; do
    pid=$(pid_of "$name") || continue
    if alive_pid "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 $((STOP_TIMEOUT_S * 10))); do
            alive_pid "$pid" || break
            sleep 0.1
        done
        if alive_pid "$pid"; then
            echo "$PROG: $name ($pid) ignored SIGTERM for ${STOP_TIMEOUT_S}s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
            if alive_pid "$pid"; then
                echo "$PROG: $name ($pid) survives SIGKILL" >&2
                status=1
                continue
            fi
        fi
    fi
    rm -f -- "$run/$name.pid"
done
exit "$status"
