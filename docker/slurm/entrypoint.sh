#!/usr/bin/env bash
# Starts one node of the container cluster: munged with the run's key (mounted at /run/secrets/munge.key),
# then the role's daemon in the foreground, its log on stdout.
#
#   slurm-entrypoint controller    slurmctld
#   slurm-entrypoint compute       slurmd (its node name is the container's hostname)
set -euo pipefail

install -o munge -g munge -m 0400 /run/secrets/munge.key /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
runuser -u munge -- /usr/sbin/munged
for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done

case "${1:-compute}" in
  controller)
    exec /usr/sbin/slurmctld -D -i -L /dev/stdout
    ;;
  compute)
    # The node's GPU as gres.conf names it: a stand-in device node (no driver behind it) so that slurmd counts
    # one GPU and jobs asking --gres=gpu:1 are scheduled as on a GPU cluster.
    [ -e /dev/nvidia0 ] || mknod -m 0666 /dev/nvidia0 c 195 0
    exec /usr/sbin/slurmd -D -N "$(hostname)" -L /dev/stdout
    ;;
  *)
    echo "usage: slurm-entrypoint controller|compute" >&2
    exit 2
    ;;
esac
