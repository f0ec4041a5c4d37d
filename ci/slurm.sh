#!/usr/bin/env bash
# A real one-machine SLURM cluster (with accounting) for CI and local tests.
#
#   bash ci/slurm.sh up     install (once), configure, start the daemons, wait until the node is idle
#   bash ci/slurm.sh down   stop the daemons this script started (and nothing else)
#
# Works as root without systemd or cgroups (Debian 12, SLURM 22.05); see /work/shared/SLURM.md for
# why each setting is here. Every daemon runs detached (setsid, stdio to log files) so it never
# holds the caller's stdout open. `up` is idempotent: daemons already running are left alone.
# Quiet on success (one line with the time taken); on failure it prints the daemon logs' tails.
#
# Environment: KDBENCH_SLURM_STATE (state, logs, pid files; default /tmp/kdbench-slurm),
# KDBENCH_SLURM_TIMEOUT (seconds to wait for each daemon and for the node; default 60).
set -Eeuo pipefail

STATE=${KDBENCH_SLURM_STATE:-/tmp/kdbench-slurm}
TIMEOUT=${KDBENCH_SLURM_TIMEOUT:-60}
LOG=$STATE/log
PIDS=$STATE/pids
CLUSTER=kdbench            # never change: slurmctld refuses its saved state after a rename
NODE=$(hostname -s)
DB_PASS=kdbench            # the database only listens on a local socket (--skip-networking)
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd slurm-wlm-mysql-plugin mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; `down` stops in reverse

fail() {
    echo "ci/slurm.sh: $*" >&2
    local f
    for f in "$LOG"/*.log "$LOG"/*.out; do
        # a SLURM daemon's stdio (.out) repeats its log file (.log): show only one of them
        [[ -s $f && $f != */apt.log && ! ($f == *.out && -s ${f%.out}.log) ]] || continue
        echo "---- tail of $f" >&2
        tail -n 25 "$f" >&2
    done
    exit 1
}
trap 'fail "failed at line $LINENO: $BASH_COMMAND"' ERR

# alive NAME: the daemon NAME that we started is running (pid file, /proc/PID/comm, not a zombie).
alive() {
    local pid stat
    pid=$(cat "$PIDS/$1.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
    stat=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || return 1
    [[ ${stat%% *} != Z ]]
}

# start NAME CMD...: run CMD (which must exec the daemon NAME in the foreground) detached.
start() {
    local name=$1
    shift
    alive "$name" && return 0
    setsid "$@" </dev/null >>"$LOG/$name.out" 2>&1 &
    echo $! >"$PIDS/$name.pid"
}

# wait_for WHAT CMD...: retry CMD until it succeeds, for at most TIMEOUT seconds.
wait_for() {
    local what=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.3
    done
}

install_packages() {
    local status
    if status=$(dpkg-query -W -f='${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null) &&
        ! grep -qvx installed <<<"$status"; then
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"; \
        } >>"$LOG/apt.log" 2>&1; then
        tail -n 25 "$LOG/apt.log" >&2
        fail "apt-get failed (log: $LOG/apt.log)"
    fi
}

write_if_changed() {   # write_if_changed PATH MODE OWNER < content
    local tmp
    tmp=$(mktemp "$1.XXXXXX")
    cat >"$tmp"
    chmod "$2" "$tmp"
    chown "$3" "$tmp"
    if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv -f "$tmp" "$1"; fi
}

hw_field() {   # hw_field KEY LINE: the number after KEY= in a `slurmd -C` line
    grep -o "\b$1=[0-9]*" <<<"$2" | cut -d= -f2 || true
}

write_config() {
    local hw cpus boards sockets cores threads mem
    hw=$(slurmd -C | head -n 1)
    cpus=$(hw_field CPUs "$hw") boards=$(hw_field Boards "$hw")
    sockets=$(hw_field SocketsPerBoard "$hw") cores=$(hw_field CoresPerSocket "$hw")
    threads=$(hw_field ThreadsPerCore "$hw") mem=$(hw_field RealMemory "$hw")
    [[ -n $cpus && -n $mem ]] || fail "could not read the node's hardware from 'slurmd -C': $hw"
    mkdir -p /etc/slurm
    write_if_changed /etc/slurm/slurm.conf 644 root:root <<EOF
# Written by ci/slurm.sh: a one-machine cluster without cgroups.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
MpiDefault=none
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
KillWait=5
ReturnToService=2
MailProg=/bin/true
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus Boards=$boards SocketsPerBoard=$sockets CoresPerSocket=$cores ThreadsPerCore=$threads RealMemory=$((mem * 95 / 100)) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    write_if_changed /etc/slurm/slurmdbd.conf 600 slurm:slurm <<EOF
# Written by ci/slurm.sh. Mode 600 and owned by SlurmUser, or slurmdbd refuses to start.
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=slurm
LogFile=$LOG/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DB_PASS
EOF
}

start_munge() {
    if [[ ! -s /etc/munge/munge.key ]]; then
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 0400 /etc/munge/munge.key
    install -d -o munge -g munge -m 0755 /run/munge /var/lib/munge /var/log/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
    wait_for munged bash -c 'munge -n </dev/null | unmunge'
}

start_mariadb() {
    [[ -d /var/lib/mysql/mysql ]] ||
        mariadb-install-db --user=mysql --skip-test-db >>"$LOG/mariadbd.out" 2>&1
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    start mariadbd /usr/sbin/mariadbd --user=mysql --skip-networking \
        --innodb-buffer-pool-size=512M --innodb-lock-wait-timeout=900
    wait_for mariadbd mariadb-admin ping
    mariadb <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurm() {
    start slurmdbd /usr/sbin/slurmdbd -D
    wait_for slurmdbd sacctmgr -n list cluster
    if ! sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER"; then
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    fi
    start slurmctld /usr/sbin/slurmctld -D
    start slurmd /usr/sbin/slurmd -D -N "$NODE"
    local deadline=$((SECONDS + TIMEOUT)) state
    while :; do
        state=$(sinfo -h -N -n "$NODE" -o %T 2>/dev/null || true)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            drained | draining | down) scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
        esac
        for name in slurmdbd slurmctld slurmd; do
            alive "$name" || fail "$name exited"
        done
        ((SECONDS < deadline)) || fail "node $NODE not idle after ${TIMEOUT}s (state: '$state')"
        sleep 0.3
    done
}

up() {
    [[ $(id -u) == 0 ]] || fail "must run as root"
    local t0=${EPOCHREALTIME//[.,]/} dt
    mkdir -p "$LOG" "$PIDS" "$STATE/slurmd"
    install_packages
    install -d -o slurm -g slurm "$STATE/slurmctld" "$STATE/run"
    chown slurm:slurm "$LOG"
    write_config
    start_munge
    start_mariadb
    start_slurm
    dt=$(((${EPOCHREALTIME//[.,]/} - t0) / 100000))
    echo "slurm: node $NODE idle after $((dt / 10)).$((dt % 10)) s (state and logs: $STATE)"
}

down() {
    local i name pid deadline
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        alive "$name" || { rm -f "$PIDS/$name.pid"; continue; }
        pid=$(cat "$PIDS/$name.pid")
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + 20))
        while alive "$name" && ((SECONDS < deadline)); do sleep 0.2; done
        if alive "$name"; then kill -KILL "$pid" 2>/dev/null || true; fi
        rm -f "$PIDS/$name.pid"
    done
}

case ${1:-} in
    up) up ;;
    down) down ;;
    *) echo "usage: bash ci/slurm.sh up|down" >&2; exit 2 ;;
esac
