#!/usr/bin/env bash
# A real single-node Slurm for the test suite, without systemd or cgroups: start | stop | status.
# Writes its configuration and state under $SLURM_TEST_DIR (default: .slurm in the checkout) and
# stops exactly the daemons it started, by PID. The client commands need SLURM_CONF=$DIR/slurm.conf.
set -euo pipefail
DIR=${SLURM_TEST_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/.slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)

write_conf() {
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat > "$CONF" <<CONF
ClusterName=ligo-test
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=30
JobRequeue=1
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  for bin in slurmctld slurmd munged; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || { echo "missing $bin: apt-get install slurm-wlm munge" >&2; exit 1; }
  done
  write_conf
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    sleep 0.2
    pgrep -x munged > "$DIR/munged.pid"  # ours to stop
  fi
  alive "$DIR/slurmctld.pid" || slurmctld -f "$CONF"
  alive "$DIR/slurmd.pid" || slurmd -f "$CONF"
  for _ in $(seq 100); do
    if SLURM_CONF=$CONF sinfo -h -o %t 2>/dev/null | grep -qx idle; then
      echo "slurm up: SLURM_CONF=$CONF"; return 0
    fi
    sleep 0.2
  done
  echo "slurm did not come up; logs in $DIR/log" >&2; SLURM_CONF=$CONF sinfo >&2 || true; exit 1
}

stop() {
  for daemon in slurmd slurmctld munged; do
    if alive "$DIR/$daemon.pid"; then
      pid=$(cat "$DIR/$daemon.pid"); kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    [ "$daemon" = munged ] && rm -f "$DIR/munged.pid"
  done
  echo "slurm stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF=$CONF sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
