#!/usr/bin/env bash
# Stop the slurmd and slurmctld that tests/cluster/setup_slurm.sh started (by their pid files).
set -euo pipefail
state="${BSYM_SLURM_STATE:-/var/lib/bsym-slurm-test}"
for daemon in slurmd slurmctld; do
    pidfile="$state/$daemon.pid"
    if [ -f "$pidfile" ]; then
        pid="$(cat "$pidfile")"
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            echo "stopped $daemon ($pid)"
        fi
    fi
done
