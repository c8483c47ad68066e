#!/usr/bin/env bash
# Build (once) the cached Debian sid root that holds Asterisk 22 (SPEC §8).
# The root is built in a temporary folder next to its final place and renamed
# when complete, so an interrupted build is never reused.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

root=$ASTERISK_ROOT
# A root is usable once it has Asterisk (ours carry a marker; one built by hand
# as in SPEC §8 is accepted too).
ready() { [[ -x $root/usr/sbin/asterisk ]]; }
unmount_all() { local m; for m in proc sys dev/pts; do mountpoint -q "$1/$m" 2>/dev/null && umount -l "$1/$m"; done; return 0; }

ready && exit 0
[[ $EUID -eq 0 ]] || die "building the Asterisk root needs root (debootstrap, chroot); or set DIALGUARD_ASTERISK=system"
command -v debootstrap >/dev/null || die "debootstrap missing: run 'make setup'"

parent=$(dirname "$root")
mkdir -p "$parent"
exec 9>"$root.lock"
flock 9
ready && exit 0   # built by a concurrent run while we waited

# Leftovers of interrupted builds (ours: same parent, .tmp. prefix).
for old in "$root".tmp.*; do
  [[ -d $old ]] || continue
  unmount_all "$old"
  rm -rf --one-file-system "$old"
done
# Never delete a folder we did not build: an empty one is fine, anything else stops here.
if [[ -e $root ]]; then
  rmdir "$root" 2>/dev/null ||
    die "$root exists but holds no Asterisk: remove it yourself or set DIALGUARD_ASTERISK_ROOT elsewhere"
fi

tmp=$root.tmp.$$
log "building Asterisk root with debootstrap (sid, about a minute): $root"
start=$SECONDS
if ! debootstrap --variant=minbase --include=asterisk,asterisk-modules \
      sid "$tmp" "$DEBIAN_MIRROR" >"$parent/debootstrap.log" 2>&1; then
  tail -n 30 "$parent/debootstrap.log" >&2
  unmount_all "$tmp"
  die "debootstrap failed (log: $parent/debootstrap.log)"
fi
# debootstrap may leave its own mounts behind on some hosts.
unmount_all "$tmp"
[[ -x $tmp/usr/sbin/asterisk ]] || die "debootstrap finished but $tmp/usr/sbin/asterisk is missing"
chroot "$tmp" asterisk -V >"$tmp/.dialguard-asterisk-version"
# The stack's runtime folder is bind-mounted here, per checkout (scripts/stack-up.sh).
mkdir -p "$tmp/dialguard"
rm -rf "$tmp/var/cache/apt/archives/"*.deb
date -u +%FT%TZ >"$tmp/.dialguard-root-ok"
mv -T "$tmp" "$root"
log "Asterisk root ready in $((SECONDS - start))s: $(cat "$root/.dialguard-asterisk-version")"
