#!/usr/bin/env bash
# The root file system of the rollout test machines (test/rollout/machines.ts): Debian 12
# (bookworm) with systemd as PID 1, sshd and everything the Faultline .deb depends on, so that
# `apt-get install ./faultline.deb` works on machines that have no network beyond the lab.
#
# Made once with debootstrap and cached under $FAULTLINE_ROLLOUT_CACHE
# (/var/cache/faultline-test/rollout) in a directory named after a hash of what goes into it
# (suite, mirror, packages and the preparation steps below), so a change here makes a new one.
# The machines never write to it: each one boots from an overlayfs with this as its lower layer.
#
# Concurrent callers (CI starts it in the background early; the rollout tests call it too) wait
# for one build under flock. The build goes into a temporary directory next to the cache entry
# and is renamed into place when complete, so a half-made rootfs is never used; an interrupted
# build's directory is removed (at exit, or by the next build).
#
# Prints the rootfs path on stdout (its only output there); progress goes to stderr.
set -euo pipefail

SUITE=bookworm
MIRROR=http://deb.debian.org/debian
VARIANT=minbase
# systemd, systemd-sysv, dbus: a real init as PID 1. openssh-server, python3: Ansible reaches
# the machines over SSH; python3-apt: Ansible's apt module needs it to install a .deb.
# ca-certificates: https sources work if a test wants them.
# The rest is the .deb's Depends (packaging/: libc6 is essential) that minbase lacks: the
# machines have no mirror, so apt must find every dependency installed already.
PACKAGES=(
  systemd systemd-sysv dbus openssh-server python3 python3-apt ca-certificates
  iproute2 nftables procps adduser libnetfilter-queue1 libfuse3-3 libstdc++6 libgcc-s1
)
CACHE_BASE=${FAULTLINE_ROLLOUT_CACHE:-/var/cache/faultline-test/rollout}

usage() {
  cat <<EOF
Usage: scripts/rollout-rootfs.sh [--help]

Prints the path of a cached Debian 12 ($SUITE) root file system for the rollout test
machines, building it first with debootstrap ($VARIANT, from $MIRROR) when it is not
cached yet: about a minute and 220 MB, once.

  Cache:     \$FAULTLINE_ROLLOUT_CACHE (default /var/cache/faultline-test/rollout)
  Packages:  ${PACKAGES[*]}
  Needs:     root, debootstrap, flock, network access to the mirror (first build only)

Callers running at the same time wait for one build. Entries for other package lists or
preparation steps (other hashes) are left alone; remove them by hand when no test runs.
EOF
}

die() {
  echo "rollout-rootfs: error: $*" >&2
  exit 1
}
say() { echo "rollout-rootfs: $*" >&2; }

case "${1:-}" in
  -h | --help)
    usage
    exit 0
    ;;
  '') ;;
  *)
    usage >&2
    die "unknown argument: $1"
    ;;
esac

# Everything done to the rootfs after debootstrap. Its text (comments stripped by `declare -f`)
# is part of the cache key, so editing it makes a new rootfs.
prepare_rootfs() {
  local root=$1

  # sshd: root by key only. No host keys in the image: every machine gets its own (the lab
  # writes them into the machine's overlay; the unit makes one if it boots without).
  rm -f "$root"/etc/ssh/ssh_host_*
  cat >"$root/etc/ssh/sshd_config.d/faultline-test.conf" <<'CONF'
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
CONF
  mkdir -p "$root/etc/systemd/system/ssh.service.d"
  cat >"$root/etc/systemd/system/ssh.service.d/faultline-test.conf" <<'CONF'
[Service]
ExecStartPre=
ExecStartPre=/bin/sh -c 'test -s /etc/ssh/ssh_host_ed25519_key || exec /usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStartPre=/usr/sbin/sshd -t
CONF
  mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
  ln -sf /lib/systemd/system/ssh.service "$root/etc/systemd/system/multi-user.target.wants/ssh.service"
  install -d -m 700 "$root/root/.ssh"

  # An empty machine-id: systemd boots with a transient one. The lab writes a real one per
  # machine; dbus reads the same file.
  : >"$root/etc/machine-id"
  ln -sf /etc/machine-id "$root/var/lib/dbus/machine-id"

  # Units that cannot work in a container or only slow the boot and the tests down: no
  # console logins (the console is a pipe to a log file), no timers that start apt or disk
  # jobs during a test, nothing waiting for a network that the lab configures from outside.
  local unit
  for unit in \
    getty.target console-getty.service getty@tty1.service container-getty@.service \
    systemd-networkd-wait-online.service systemd-networkd.service systemd-networkd.socket \
    apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
    dpkg-db-backup.timer dpkg-db-backup.service e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer systemd-tmpfiles-clean.timer \
    systemd-firstboot.service systemd-hwdb-update.service systemd-journal-catalog-update.service \
    systemd-update-utmp-runlevel.service systemd-pstore.service \
    sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
  done

  # The journal stays in memory (nothing to flush, smaller overlays); the console shows it.
  mkdir -p "$root/etc/systemd/journald.conf.d"
  printf '[Journal]\nStorage=volatile\nForwardToConsole=no\n' >"$root/etc/systemd/journald.conf.d/faultline-test.conf"

  # No service started by dpkg in the chroot keeps running; apt's lists are not needed offline.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
  echo 'faultline-test' >"$root/etc/hostname"
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, and the cache lives in /var/cache)"
for tool in debootstrap flock sha256sum; do
  command -v "$tool" >/dev/null || die "$tool is not installed (Debian: apt-get install debootstrap util-linux coreutils)"
done

key=$(printf '%s\n' "$SUITE" "$MIRROR" "$VARIANT" "${PACKAGES[*]}" "$(declare -f prepare_rootfs)" | sha256sum | cut -c1-12)
name="rootfs-$SUITE-$key"
final="$CACHE_BASE/$name"

if [ -d "$final" ]; then
  echo "$final"
  exit 0
fi

mkdir -p "$CACHE_BASE"
exec 9>"$CACHE_BASE/.$name.lock"
if ! flock -n 9; then
  say "another build of $name is running: waiting for it"
  flock 9
fi
if [ -d "$final" ]; then
  echo "$final"
  exit 0
fi

# Unmounts whatever an interrupted debootstrap left mounted below $1 (proc, sys, dev), deepest
# first, then removes $1 without ever crossing into a mount that is still there.
remove_tree() {
  local dir=$1 mnt
  [ -e "$dir" ] || return 0
  while read -r mnt; do
    umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || say "could not unmount $mnt"
  done < <(awk -v d="$dir/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  rm -rf --one-file-system "$dir"
}

# Builds of this entry that were killed: under the lock, no other build can be using them.
for stale in "$CACHE_BASE/.$name.tmp."*; do
  [ -e "$stale" ] || continue
  say "removing an interrupted build: $stale"
  remove_tree "$stale"
done

tmp=$(mktemp -d "$CACHE_BASE/.$name.tmp.XXXXXX")
child=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  remove_tree "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$SECONDS
say "building $name with debootstrap from $MIRROR (about a minute, once)"
chmod 755 "$tmp"
includes=$(
  IFS=,
  echo "${PACKAGES[*]}"
)
# In the background and waited for: a TERM or INT then runs the trap at once instead of after
# debootstrap has finished.
debootstrap --variant="$VARIANT" --include="$includes" "$SUITE" "$tmp" "$MIRROR" >&2 &
child=$!
wait "$child" || die "debootstrap failed (exit $?): see its output above (and $tmp/debootstrap/debootstrap.log while it exists)"
child=

say "preparing the rootfs"
prepare_rootfs "$tmp"
missing=$(chroot "$tmp" dpkg-query -W -f '${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>&1 | awk '$1 != "ii" { print $NF }') || true
[ -z "$missing" ] || die "packages not installed in the rootfs: $missing"

mv -T "$tmp" "$final"
say "done in $((SECONDS - started)) s: $(du -sh --one-file-system "$final" | cut -f1) in $final"
echo "$final"
