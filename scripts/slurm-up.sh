#!/usr/bin/env bash
# Start a throwaway single-node Slurm cluster (Debian's Slurm 22.05) for tests and demos.
#
# Usage: scripts/slurm-up.sh DIR [PORT]
#
# Everything lives under DIR: etc/slurm.conf and etc/gres.conf, munge/ (its own key,
# socket, pid, log and seed: the system munged, if any, is never touched), state/
# (slurmctld's StateSaveLocation), spool/ (slurmd), run/ (pid files), log/ (daemon logs and
# the jobcomp/filetxt record that `sacct -c` reads) and dev/ (two fake GPUs: character
# devices made with mknod, offered as GRES gpu:2, so `--gres=gpu:N` sets CUDA_VISIBLE_DEVICES).
# One partition, `debug` (Default=YES), holds the one node, named after this host.
# COMPUTENET_SLURM_GPU_TYPE=a100 (say) makes the GPUs typed (`Gres=gpu:a100:2`), as on real
# clusters that name their cards.
#
# The last line on stdout is always `SLURM_CONF=DIR/etc/slurm.conf`: export it and sinfo,
# sbatch, squeue, scontrol, scancel and sacct talk to this cluster.
# If this DIR's daemons already run and answer, that line is printed again and nothing
# changes. Anything half-running from DIR is stopped and started afresh (job state under
# DIR/state is kept across restarts).
#
# Binaries come from the Debian packages slurmctld, slurmd, slurm-client and munge. When one
# is missing and COMPUTENET_INSTALL_SLURM=1, running as root with apt-get, they are installed
# (--no-install-recommends); otherwise the script exits 3 with one line saying why.
# Ports: slurmctld on PORT and slurmd on PORT+1 when PORT is given; else the pair an earlier
# run of DIR used, if still free, else the first free pair from 6817/6818 upward. Clusters in
# different DIRs can run side by side.
#
# Exit status: 0 ok; 2 bad usage; 3 Slurm not available here (one line on stderr says
# why); 1 any other failure (the daemon logs under DIR/log say more).
set -euo pipefail

readonly PROG=slurm-up.sh
readonly PACKAGES=(slurmctld slurmd slurm-client munge)
readonly BINARIES=(slurmctld slurmd sinfo sbatch squeue scontrol scancel sacct munged)
readonly PARTITION=debug
readonly GPUS=2
readonly START_TIMEOUT_S=60

die() {
    local code=$1
    shift
    echo "$PROG: $*" >&2
    exit "$code"
}

[[ ($# -eq 1 || $# -eq 2) && -n $1 ]] || die 2 "usage: $PROG DIR [PORT]"
want_port=${2:-}
if [[ -n $want_port ]] && { ! [[ $want_port =~ ^[0-9]+$ ]] || ((want_port < 1 || want_port > 65534)); }; then
    die 2 "bad port: $want_port"
fi
# Daemons live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1

missing_binaries() {
    local b out=()
    for b in "${BINARIES[@]}"; do
        command -v "$b" >/dev/null 2>&1 || out+=("$b")
    done
    echo "${out[*]:-}"
}

# --- binaries ---------------------------------------------------------------------------
missing=$(missing_binaries)
if [[ -n $missing ]]; then
    if [[ ${COMPUTENET_INSTALL_SLURM:-} == 1 && $is_root -eq 1 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "$PROG: installing Debian's ${PACKAGES[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >&2; then
            # Stale package lists: refresh them once and try again.
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } >&2 \
                || die 3 "Slurm not available: apt-get install ${PACKAGES[*]} failed"
        fi
        missing=$(missing_binaries)
        [[ -z $missing ]] || die 3 "Slurm not available: installed, but still missing: $missing"
    else
        die 3 "Slurm not available: missing $missing (install Debian's ${PACKAGES[*]}, or set COMPUTENET_INSTALL_SLURM=1 as root on Debian)"
    fi
fi

# --- layout -------------------------------------------------------------------------------
mkdir -p -- "$1"
dir=$(cd -- "$1" && pwd -P)
etc=$dir/etc
conf=$etc/slurm.conf
run=$dir/run
log=$dir/log
mdir=$dir/munge
msock=$mdir/munge.socket
# Unix socket paths are limited to 107 bytes.
((${#msock} <= 100)) || die 1 "DIR path too long for munge's Unix socket ($msock); use a shorter DIR"

export SLURM_CONF=$conf

# Alive = has a process-table entry that is not a zombie (zombies are reaped late here,
# so `kill -0` is not enough).
alive() {
    local pid stat
    [[ -r $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
    [[ -n $stat && $stat != Z* ]]
}

node_state() {
    sinfo -h -N -p "$PARTITION" -o %t 2>/dev/null | head -n 1 | tr -d ' *~#!%$@^-'
}

# --- already running? --------------------------------------------------------------------
if [[ -f $conf ]] && alive "$run/munged.pid" && alive "$run/slurmctld.pid" && alive "$run/slurmd.pid" \
    && timeout 10 scontrol ping >/dev/null 2>&1 && [[ $(node_state) =~ ^(idle|mix|alloc)$ ]]; then
    echo "$PROG: Slurm from $dir is already running" >&2
    echo "SLURM_CONF=$conf"
    exit 0
fi
if [[ -d $run ]]; then
    echo "$PROG: stopping what is left of an earlier Slurm from $dir" >&2
    bash "$(dirname -- "${BASH_SOURCE[0]}")/slurm-down.sh" "$dir" >&2 || true
fi

mkdir -p -- "$etc" "$run" "$log" "$mdir" "$dir/state" "$dir/spool" "$dir/dev"
chmod 0700 "$mdir"

# --- ports --------------------------------------------------------------------------------
port_free() {
    ! ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}
old_ctld=
if [[ -f $conf ]]; then
    old_ctld=$(sed -n 's/^SlurmctldPort=\([0-9]*\)$/\1/p' "$conf")
fi
ctld_port=
if [[ -n $want_port ]]; then
    if ! port_free "$want_port" || ! port_free "$((want_port + 1))"; then
        die 1 "port $want_port or $((want_port + 1)) is already in use"
    fi
    ctld_port=$want_port
else
    for p in $old_ctld $(seq 6817 2 6915); do
        if port_free "$p" && port_free "$((p + 1))"; then
            ctld_port=$p
            break
        fi
    done
    [[ -n $ctld_port ]] || die 1 "no free pair of ports between 6817 and 6916"
fi
d_port=$((ctld_port + 1))

# --- munge --------------------------------------------------------------------------------
if [[ ! -s $mdir/munge.key ]]; then
    dd if=/dev/urandom of="$mdir/munge.key" bs=1024 count=1 status=none
fi
chmod 0400 "$mdir/munge.key"
rm -f -- "$msock" "$msock.lock"
munged --force --socket="$msock" --key-file="$mdir/munge.key" --pid-file="$run/munged.pid" \
    --log-file="$log/munged.log" --seed-file="$mdir/munge.seed" </dev/null >>"$log/munged.log" 2>&1 \
    || die 1 "munged failed to start; see $log/munged.log"

# --- fake GPUs ------------------------------------------------------------------------------
gres_line=
node_gres=
if ((is_root)); then
    for ((i = 0; i < GPUS; i++)); do
        [[ -c $dir/dev/nvidia$i ]] || { rm -f -- "$dir/dev/nvidia$i"; mknod "$dir/dev/nvidia$i" c 195 "$i"; }
    done
    gpu_type=${COMPUTENET_SLURM_GPU_TYPE:-}
    [[ -z $gpu_type || $gpu_type =~ ^[A-Za-z0-9_.-]+$ ]] || die 2 "bad COMPUTENET_SLURM_GPU_TYPE: $gpu_type"
    gres_line="Name=gpu${gpu_type:+ Type=$gpu_type} File=$dir/dev/nvidia[0-$((GPUS - 1))]"
    node_gres=" Gres=gpu:${gpu_type:+$gpu_type:}$GPUS"
else
    echo "$PROG: not root: no fake GPUs (mknod needs root)" >&2
fi

# --- configuration ------------------------------------------------------------------------
host=$(hostname -s)
user=$(id -un)
# The node line as slurmd sees this machine, with RealMemory lowered to 95%: a node that
# declares all of its memory drains itself with "Low RealMemory".
node_line=$(SLURM_CONF=/dev/null slurmd -C 2>/dev/null | grep '^NodeName=' | head -n 1) \
    || die 1 "slurmd -C printed no node line"
mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
[[ -n $mem ]] || die 1 "no RealMemory in: $node_line"
node_line=$(sed "s/RealMemory=[0-9]*/RealMemory=$((mem * 95 / 100))/; s/^NodeName=[^ ]*/NodeName=$host/" <<<"$node_line")

cat >"$conf" <<EOF
# Written by scripts/slurm-up.sh for a throwaway single-node test cluster: do not edit.
ClusterName=cn$(printf '%s' "$dir" | md5sum | cut -c1-8)
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$msock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$run/slurmctld.pid
SlurmdPidFile=$run/slurmd.pid
SlurmctldLogFile=$log/slurmctld.log
SlurmdLogFile=$log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
MinJobAge=3600
KillWait=5
MailProg=/bin/true
JobCompType=jobcomp/filetxt
JobCompLoc=$log/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
GresTypes=gpu
$node_line NodeAddr=127.0.0.1$node_gres State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
echo "${gres_line:-# no GPUs}" >"$etc/gres.conf"

# --- daemons ------------------------------------------------------------------------------
start_daemon() {
    local name=$1
    shift
    # Own session, stdio away from our caller's pipes (or they would never see EOF).
    setsid "$@" </dev/null >>"$log/$name.stdio" 2>&1 || {
        tail -n 20 -- "$log/$name.log" >&2 2>/dev/null || true
        die 1 "$name failed to start; see $log/$name.log"
    }
}
start_daemon slurmctld slurmctld -f "$conf"
start_daemon slurmd slurmd -f "$conf" -N "$host"

deadline=$((SECONDS + START_TIMEOUT_S))
state=
until [[ $state == idle ]]; do
    if ((SECONDS >= deadline)); then
        tail -n 20 -- "$log/slurmctld.log" "$log/slurmd.log" >&2 2>/dev/null || true
        die 1 "node $host not idle after ${START_TIMEOUT_S}s (state: ${state:-none}); logs under $log"
    fi
    sleep 0.2
    for name in slurmctld slurmd; do
        # A daemon that died (say, its port was taken meanwhile) never comes back: say so now.
        if [[ -f $run/$name.pid ]] && ! alive "$run/$name.pid"; then
            tail -n 20 -- "$log/$name.log" >&2 2>/dev/null || true
            die 1 "$name exited during start-up (port in use?); see $log/$name.log"
        fi
    done
    state=$(node_state || true)
    if [[ $state =~ ^(drain|drng|down|fail) ]]; then
        # A node left drained by an earlier run of this DIR: return it to service.
        scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true
    fi
done
echo "SLURM_CONF=$conf"
