#!/usr/bin/env bash
# Install (Debian: slurm-wlm, munge) and start a single-node SLURM on this machine, for `make test-cluster`.
# Needs root. Idempotent: a SLURM that already answers `scontrol ping` with our configuration is kept.
# Daemon state, logs and pid files go to $BSYM_SLURM_STATE (default /var/lib/bsym-slurm-test);
# tests/cluster/stop_slurm.sh stops what this script started.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state="${BSYM_SLURM_STATE:-/var/lib/bsym-slurm-test}"
conf=/etc/slurm/slurm.conf

if [ "$(id -u)" -ne 0 ]; then
    echo "setup_slurm.sh: needs root (it installs packages and starts daemons)." >&2
    exit 77
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    echo "Installing slurm-wlm and munge with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# munge: a key, then the daemon (unless one already answers).
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi

host="$(hostname -s)"
cpus="$(nproc)"
mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)"
mkdir -p "$state/slurmctld" "$state/slurmd" /etc/slurm
new_conf="$(sed -e "s|@HOST@|$host|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" -e "s|@STATE@|$state|g" \
    "$here/slurm.conf.in")"
if [ -f "$conf" ] && ! grep -q 'make test-cluster' "$conf"; then
    cp "$conf" "$conf.before-bsym-test"
    echo "Saved the existing $conf as $conf.before-bsym-test"
fi
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" > "$conf"
fi

if ! scontrol ping 2>/dev/null | grep -q 'is UP'; then
    slurmctld
fi
if ! [ -f "$state/slurmd.pid" ] || ! kill -0 "$(cat "$state/slurmd.pid")" 2>/dev/null; then
    slurmd
fi
for _ in $(seq 120); do
    node_state="$(sinfo -h -N -o '%T' 2>/dev/null | head -1 || true)"
    case "$node_state" in idle|mixed|allocated) break ;; esac
    sleep 0.5
done
if [ "${node_state:-}" = "down" ] || [ "${node_state:-}" = "drained" ]; then
    scontrol update NodeName="$host" State=RESUME || true
    sleep 1
    node_state="$(sinfo -h -N -o '%T' | head -1)"
fi
case "${node_state:-}" in
    idle|mixed|allocated) echo "SLURM up: node $host ($cpus CPUs, $mem_mb MB), state $node_state; logs in $state" ;;
    *) echo "SLURM did not come up (node state '${node_state:-none}'); see $state/slurmctld.log and slurmd.log" >&2
       exit 1 ;;
esac
