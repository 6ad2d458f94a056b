#!/usr/bin/env bash
# A real one-node SLURM for the tests: install slurm-wlm and munge (root or sudo), start munged,
# slurmctld and slurmd with a localhost configuration in a scratch directory, submit each job
# array given, one after the other, waiting for each, and stop every daemon this script started
# on exit.
#
#   tests/slurm/run.sh WORKDIR SCRIPT ARRAY EXPORTS [SCRIPT ARRAY EXPORTS ...]
#
# e.g. SCRIPT=examples/slurm/losscape.sbatch ARRAY=0-2 EXPORTS='LOSSCAPE=/path/losscape,ARGS=line ...'
set -euo pipefail
work=$1; shift
sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
munge_before=$(pgrep -x munged || true)

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq slurm-wlm munge >/dev/null
fi

mkdir -p "$work"/{spool,state,log,run}
started=()
cleanup() {
  for pid in "${started[@]}"; do $sudo kill "$pid" 2>/dev/null || true; done
  sleep 1
  for pid in "${started[@]}"; do $sudo kill -9 "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# munge: a key if there is none, and a daemon if none answers. One that the package install just
# started counts as ours too.
if [ -z "$munge_before" ] && pgrep -x munged >/dev/null; then
  started+=("$(pgrep -xn munged)")
fi
if ! munge -n >/dev/null 2>&1; then
  if [ ! -s /etc/munge/munge.key ]; then
    $sudo mkdir -p /etc/munge
    $sudo dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    $sudo chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    $sudo chmod 400 /etc/munge/munge.key
  fi
  $sudo mkdir -p /run/munge /var/log/munge /var/lib/munge
  $sudo chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  $sudo munged --force
  for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.2; done
  started+=("$(pgrep -xn munged)")
fi

host=$(hostname -s)
mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
conf="$work/slurm.conf"
cat >"$conf" <<CONF
ClusterName=losscape-test
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
SlurmctldPort=16817
SlurmdPort=16818
MpiDefault=none
NodeName=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$conf
$sudo slurmctld -f "$conf"
for _ in $(seq 50); do [ -s "$work/run/slurmctld.pid" ] && break; sleep 0.2; done
started+=("$(cat "$work/run/slurmctld.pid")")
$sudo slurmd -f "$conf"
for _ in $(seq 50); do [ -s "$work/run/slurmd.pid" ] && break; sleep 0.2; done
started+=("$(cat "$work/run/slurmd.pid")")
for _ in $(seq 100); do
  sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)' && break
  sleep 0.3
done
sinfo

cd "$work"
while [ $# -ge 3 ]; do
  script=$1 array=$2 exports=$3
  shift 3
  sbatch --wait --array="$array" --time=10:00 --export="ALL,$exports" "$script"
done
cat "$work"/losscape-*.out
