#!/usr/bin/env bash
# Several nodes on one machine, for the multi-node tests: start [N] | stop | status | on NODE CMD...
#
# Each node is a network namespace with its own UTS namespace (hostname nodeK), an interface eth0 with
# address $SUBNET.K on a private bridge, an sshd (keys made here, for pdsh and mpirun) and a slurmd. A
# head namespace holds the bridge and slurmctld. The subnet exists only inside these namespaces; the
# machine's own network, /etc/hosts and /etc/ssh are untouched: `on` runs a command in a node's
# namespaces with this cluster's hosts file and ssh configuration bind-mounted over /etc/hosts and
# /etc/ssh in a mount namespace of its own. The filesystem is otherwise shared, as a cluster's is.
#
# Everything it makes is named (namespaces $PREFIX-head, $PREFIX-node1..N) or recorded by PID under
# $DIR, and `stop` removes exactly that, also after a failed or partial start. Needs root, iproute2,
# util-linux (nsenter, unshare, taskset), openssh-server, and for Slurm slurm-wlm and munge.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DIR=${MULTINODE_DIR:-$ROOT/.multinode}
PREFIX=${MULTINODE_PREFIX:-ligo}
# A subnet nothing else here uses; it never leaves the namespaces.
SUBNET=${MULTINODE_SUBNET:-10.213.77}
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

nodes() { cat "$DIR/nodes" 2>/dev/null || echo 0; }

# on NODE CMD...: run CMD in NODE's namespaces (NODE is head or nodeK). exec all the way down, so the
# caller's PID is the command's PID and a kill of it reaches the command.
on() {
  local node=$1 cpus pin=()
  shift
  [ -d "$DIR/etc" ] || { echo "no cluster under $DIR: run $SELF start" >&2; exit 2; }
  # Each node gets a core of its own (round robin), as a real node has its own cores: a rank there then
  # runs as many threads as its node has cores, not as the whole machine has.
  if [ "${node#node}" != "$node" ]; then
    cpus=$(nproc --all)
    pin=(taskset -c $(( (${node#node} - 1) % cpus )))
  fi
  # nsenter, not `ip netns exec`: that one mounts a fresh /sys without /sys/fs/cgroup, which slurmd reads.
  exec "${pin[@]}" nsenter --net="/run/netns/$PREFIX-$node" unshare --uts --mount --propagation private -- /bin/sh -c \
    'hostname "$0" && mount --bind "$1/hosts" /etc/hosts && mount --bind "$1/ssh" /etc/ssh && shift && exec "$@"' \
    "$node" "$DIR/etc" "$@"
}

write_etc() {
  local n=$1 i
  mkdir -p "$DIR/etc/ssh" "$DIR/run" "$DIR/log"
  {
    echo "127.0.0.1 localhost"
    echo "$SUBNET.254 head"
    for i in $(seq "$n"); do echo "$SUBNET.$i node$i"; done
  } > "$DIR/etc/hosts"
  # One host key and one client key for every node: the nodes trust each other as a cluster's do.
  [ -f "$DIR/etc/ssh/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/etc/ssh/ssh_host_ed25519_key"
  [ -f "$DIR/etc/ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -f "$DIR/etc/ssh/id_ed25519"
  cp "$DIR/etc/ssh/id_ed25519.pub" "$DIR/etc/ssh/authorized_keys"
  # Paths as seen inside a node, where this directory is /etc/ssh.
  cat > "$DIR/etc/ssh/sshd_config" <<EOF
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
AuthorizedKeysFile /etc/ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
EOF
  cat > "$DIR/etc/ssh/ssh_config" <<EOF
Host *
  IdentityFile /etc/ssh/id_ed25519
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  ConnectTimeout 10
  LogLevel ERROR
EOF
}

write_slurm_conf() {
  local n=$1 i cpus
  cpus=$(nproc)
  mkdir -p "$DIR/slurm/state"
  for i in $(seq "$n"); do mkdir -p "$DIR/slurm/spool/node$i"; done
  {
    cat <<EOF
ClusterName=ligo-multinode
SlurmctldHost=head($SUBNET.254)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/slurm/state
SlurmdSpoolDir=$DIR/slurm/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
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
EOF
    for i in $(seq "$n"); do
      echo "NodeName=node$i NodeAddr=$SUBNET.$i CPUs=$cpus RealMemory=1000 State=UNKNOWN"
    done
    echo "PartitionName=debug Nodes=node[1-$n] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
  } > "$DIR/slurm/slurm.conf"
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_network() {
  local n=$1 i ns
  ip netns add "$PREFIX-head"
  ip -n "$PREFIX-head" link set lo up
  ip -n "$PREFIX-head" link add br0 type bridge
  ip -n "$PREFIX-head" addr add "$SUBNET.254/24" dev br0
  ip -n "$PREFIX-head" link set br0 up
  for i in $(seq "$n"); do
    ns=$PREFIX-node$i
    ip netns add "$ns"
    # Made straight inside the namespaces: no interface ever appears in the machine's own namespace.
    ip link add eth0 netns "$ns" type veth peer name "port$i" netns "$PREFIX-head"
    ip -n "$PREFIX-head" link set "port$i" master br0 up
    ip -n "$ns" addr add "$SUBNET.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
}

start_munge() {
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  # One munged serves every node (its socket is a file, and the filesystem is shared); ours to stop only
  # if we started it. Asked through its socket: pgrep would also count a dying one.
  if ! munge -n </dev/null >/dev/null 2>&1; then
    rm -f /run/munge/munged.pid
    runuser -u munge -- /usr/sbin/munged
    # The daemon's own pid file: a pgrep right after the start can also catch the exiting parent.
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
  fi
}

start() {
  local n=${1:-2} i idle
  [ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
  [ -x /usr/sbin/sshd ] || { echo "missing /usr/sbin/sshd: apt-get install openssh-server pdsh" >&2; exit 1; }
  if ip netns list | grep -q "^$PREFIX-"; then stop; fi
  mkdir -p "$DIR"
  echo "$n" > "$DIR/nodes"
  write_etc "$n"
  start_network "$n"
  # sshd's privilege-separation directory; Debian's service script makes it, and there is no service here.
  mkdir -p /run/sshd
  for i in $(seq "$n"); do
    "$SELF" on "node$i" /usr/sbin/sshd -f /etc/ssh/sshd_config -o "PidFile=$DIR/run/sshd-node$i.pid" \
      -E "$DIR/log/sshd-node$i.log"
  done
  if command -v slurmctld >/dev/null && [ -x /usr/sbin/munged ]; then
    write_slurm_conf "$n"
    start_munge
    "$SELF" on head slurmctld -f "$DIR/slurm/slurm.conf"
    for i in $(seq "$n"); do
      "$SELF" on "node$i" slurmd -f "$DIR/slurm/slurm.conf" -N "node$i"
    done
    for _ in $(seq 150); do
      idle=$(SLURM_CONF=$DIR/slurm/slurm.conf "$SELF" on node1 sinfo -h -N -o %t 2>/dev/null | grep -cx idle || true)
      if [ "$idle" = "$n" ]; then break; fi
      sleep 0.2
    done
    if [ "$idle" != "$n" ]; then
      echo "$idle of $n slurmd idle after 30 s; logs in $DIR/log" >&2
      return 1
    fi
  fi
  status
}

status() {
  local n i
  n=$(nodes)
  for i in $(seq "$n"); do
    "$SELF" on node1 ssh "node$i" hostname >/dev/null || { echo "ssh to node$i failed; logs in $DIR/log" >&2; exit 1; }
  done
  echo "$n nodes up: $DIR/etc/hosts; run commands with: $SELF on node1 CMD"
  if [ -f "$DIR/slurm/slurm.conf" ]; then
    if ! SLURM_CONF=$DIR/slurm/slurm.conf "$SELF" on node1 sinfo -h -N -o '%N %t' | grep -q .; then
      echo "slurm not answering; logs in $DIR/log" >&2; exit 1
    fi
    SLURM_CONF=$DIR/slurm/slurm.conf "$SELF" on node1 sinfo -N
    echo "slurm: SLURM_CONF=$DIR/slurm/slurm.conf, client commands inside a node"
  fi
}

stop_pid() {
  local file=$1 pid
  if alive "$file"; then
    pid=$(cat "$file"); kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

stop() {
  local f ns pids
  for f in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR"/run/sshd-*.pid "$DIR/run/munged.pid"; do
    [ -e "$f" ] && stop_pid "$f"
  done
  # Whatever is still inside our namespaces (ranks of a job a failed test left behind) is ours: only
  # this script puts processes there.
  for ns in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-\(head\|node[0-9]*\)$" || true); do
    pids=$(ip netns pids "$ns" || true)
    if [ -n "$pids" ]; then
      # shellcheck disable=SC2086  # a list of PIDs
      kill -9 $pids 2>/dev/null || true
    fi
    ip netns del "$ns"
  done
  rm -rf "$DIR/slurm/spool" "$DIR/slurm/state" "$DIR/nodes"
  echo "multi-node cluster stopped"
}

case "${1:-}" in
  start)
    # A start that fails half-way removes what it made, so nothing is left for the next run to trip on.
    set -E
    trap 'rc=$?; trap - ERR; echo "start failed (exit $rc); removing what it made" >&2; stop >&2; exit $rc' ERR
    start "${2:-2}" ;;
  stop) stop ;;
  status) status ;;
  on) shift; on "$@" ;;
  *) echo "usage: $0 start [NODES] | stop | status | on NODE CMD..." >&2; exit 2 ;;
esac
