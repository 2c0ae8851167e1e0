#!/usr/bin/env bash
# Build (once) the Debian 12 root file system the systemd pair test boots, and print its path.
#   scripts/systemd-rootfs.sh
# The tree is cached outside the repository under a name that hashes the package list, so a
# change to the list builds a new one; the build goes to a temporary directory renamed into place,
# so an interrupted build never leaves a half tree that a later run would trust.
# Everything the hapair package depends on is included here: the containers have no network and
# `apt-get install ./hapair_*.deb` must resolve its Depends from what is already installed.
set -euo pipefail
SUITE=bookworm
MIRROR=${HAPAIR_TEST_MIRROR:-http://deb.debian.org/debian}
CACHE=${HAPAIR_TEST_CACHE:-/var/cache/hapair-test}
INCLUDE=systemd,systemd-sysv,dbus,libpam-systemd,iproute2,iputils-ping,procps,python3,rsync,openssh-server,openssh-client,sqlite3
key=$(printf '%s\n' "$SUITE" "$MIRROR" "$INCLUDE" | sha256sum | cut -c1-12)
dest="$CACHE/rootfs-$key"
if [[ -f "$dest/.complete" ]]; then
  echo "$dest"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "systemd-rootfs: debootstrap missing (scripts/bootstrap.sh base systemd)" >&2; exit 1; }
mkdir -p "$CACHE"
tmp=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf --one-file-system "$tmp"' EXIT
echo "systemd-rootfs: debootstrap $SUITE into $tmp (a few minutes, once)" >&2
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$tmp/root" "$MIRROR" >"$tmp/log" 2>&1 \
  || { tail -20 "$tmp/log" >&2; exit 1; }
# Per-container identity (hostname, machine-id, ssh host keys) is written at copy time.
rm -f "$tmp/root/etc/ssh/ssh_host_"* "$tmp/root/etc/machine-id"
: >"$tmp/root/etc/machine-id"
# Nothing to fetch in a container without network; apt must not try.
rm -f "$tmp/root/var/cache/apt/archives/"*.deb
touch "$tmp/root/.complete"
mv "$tmp/root" "$dest"
echo "$dest"
