#!/usr/bin/env bash
# Install what hapair's targets need, idempotently: Debian packages, then the virtualenv.
#   scripts/bootstrap.sh [apt-group ...]     groups: base (default), bench, vm, resources, deb, systemd,
#                                            pacemaker, campaign
# Safe to run again: packages already present are not reinstalled; the venv is rebuilt only
# when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

declare -A APT=(
  # prometheus: promtool, which checks and tests conf/prometheus/hapair.rules.yml; faketime: clock steps.
  [base]="iproute2 nftables rsync openssh-server openssh-client iputils-ping procps sqlite3 systemd prometheus faketime"
  [bench]="keepalived lsyncd"
  # Debian's OCF resource agents; Filesystem needs modprobe (kmod) present, and the lab's
  # storage is an ext4 image (e2fsprogs) on a loop device.
  [resources]="resource-agents kmod e2fsprogs"
  # `make deb`: Debian's own packaging tools; dh-virtualenv because bookworm's python3-pyroute2,
  # -pyghmi and -apscheduler are too old (README, "Installing on a real pair of servers").
  [deb]="debhelper dh-virtualenv python3-venv python3-dev build-essential fakeroot lintian"
  # `make test-systemd`: a Debian root file system booted with systemd-nspawn.
  [systemd]="debootstrap systemd-container"
  # bench-resources' anchor: Pacemaker 2.1 on Corosync 3 (never started as services here),
  # fencing with fence_ipmilan (fence-agents, which runs ipmitool) at the lab's ipmi_sim BMCs.
  [pacemaker]="pacemaker pacemaker-cli-utils corosync fence-agents ipmitool openipmi"
  # The fault campaign: clock steps (libfaketime) and the BMCs fencing goes through.
  [campaign]="faketime openipmi"
  [vm]="openipmi ipmitool libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 libvirt-dev pkg-config"
)
groups=("${@:-base}")
want=()
for g in "${groups[@]}"; do
  [[ -n "${APT[$g]+x}" ]] || { echo "bootstrap: unknown group '$g'" >&2; exit 2; }
  for p in ${APT[$g]}; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || want+=("$p")
  done
done
if ((${#want[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages (${want[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${want[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
fi
# Debian enables and starts daemons on install; on a real pair that is the admin's call, in the
# lab they would only compete with the ones the tests start.
for svc in keepalived lsyncd prometheus pacemaker corosync; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
stamp="$VENV/.installed"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
# libvirt-python builds only where libvirt-dev is installed (apt group vm): the stamp records
# which extras the venv has, so a venv made by `make demo` gains them when `make test` needs them.
extras=""
if pkg-config --exists libvirt 2>/dev/null; then extras="[libvirt]"; fi
# The bench apt group also brings the pip group bench (matplotlib, for the benchmarks' pictures);
# a venv that has it keeps it, so `make unit` after `make bench-failover` reinstalls nothing.
pipgroups="dev"
if [[ " ${groups[*]} " == *" bench "* ]] || grep -qs '^groups=dev bench$' "$stamp"; then
  pipgroups="dev bench"
fi
want_stamp=$(printf 'extras=%s\ngroups=%s' "$extras" "$pipgroups")
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" || "$(cat "$stamp")" != "$want_stamp" ]]; then
  "$VENV/bin/python" -m pip install -q --upgrade 'pip>=25.1'
  # shellcheck disable=SC2046  # one --group per word
  "$VENV/bin/python" -m pip install -q -e ".${extras}" $(printf -- '--group %s ' $pipgroups)
  echo "$want_stamp" > "$stamp"
fi
