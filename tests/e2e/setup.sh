#!/usr/bin/env bash
# Installs what the end-to-end boot test (tests/tests/e2e_boot.rs) needs and builds the
# cached Debian 12 node image. Idempotent; run as root (`.ci/run` calls it).
#
#   bash tests/e2e/setup.sh            # packages + image (image rebuilt only when missing)
#   STATELITE_E2E_CACHE=DIR bash ...   # cache somewhere else (default /var/cache/statelite-e2e)
#
# The image is `debootstrap --variant=minbase --include=systemd-sysv,udev bookworm` from
# the Debian mirror configured in this machine's apt sources (the only network use), built
# into a temporary directory and renamed into place, so an interrupted build never leaves
# a half image that later runs would trust.
set -euo pipefail

CACHE="${STATELITE_E2E_CACHE:-/var/cache/statelite-e2e}"
PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static nfs-ganesha nfs-ganesha-vfs
          pxelinux syslinux-common debootstrap kmod cpio socat)

if [ "$(id -u)" -ne 0 ]; then
    echo "tests/e2e/setup.sh: must run as root" >&2
    exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== e2e: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The mirror: the first deb.debian.org-style URI of the main Debian suite in apt's sources
# (deb822 or one-line format).
mirror() {
    local m
    m=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
          | awk '{print $2}' | grep -v security | head -n1 || true)
    if [ -z "$m" ]; then
        m=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
              | grep -v security | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; exit } }' \
              | head -n1 || true)
    fi
    echo "${m:-http://deb.debian.org/debian}"
}

IMAGE="$CACHE/debian12-minbase"
# The marker sits beside the image (inside it, the node would see it).
if [ ! -e "$IMAGE/sbin/init" ] || [ ! -f "$IMAGE.complete" ]; then
    MIRROR=$(mirror)
    echo "== e2e: building the node image with debootstrap from $MIRROR (about a minute)"
    mkdir -p "$CACHE"
    TMP="$CACHE/debian12-minbase.tmp.$$"
    rm -rf "$TMP"
    trap 'rm -rf "$TMP"' EXIT
    debootstrap --variant=minbase --include=systemd-sysv,udev bookworm "$TMP" "$MIRROR" \
        > "$CACHE/debootstrap.log" 2>&1 \
        || { echo "debootstrap failed; see $CACHE/debootstrap.log" >&2; tail -n 20 "$CACHE/debootstrap.log" >&2; exit 1; }
    # Smaller and quicker to boot: no apt lists or package caches in a read-only image.
    rm -rf "$TMP"/var/cache/apt/*.bin "$TMP"/var/cache/apt/archives/*.deb "$TMP"/var/lib/apt/lists/*
    rm -rf "$IMAGE"
    mv "$TMP" "$IMAGE"
    touch "$IMAGE.complete"
    trap - EXIT
fi
echo "== e2e: node image ready in $IMAGE"

# Static statelite-mountd and litectl for the initramfs (SPEC §5: the root's daemon loads
# nothing from the root it serves). A target directory of their own: other flags, and a
# nested cargo (from a running test) never waits on the workspace's build lock.
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
if [ -f "$REPO/Cargo.toml" ]; then
    echo "== e2e: static statelite-mountd and litectl"
    CARGO_TARGET_DIR="$REPO/target/e2e-static" \
    RUSTFLAGS="-C target-feature=+crt-static -C strip=debuginfo" \
        cargo build --release --quiet --target x86_64-unknown-linux-gnu -p statelite-mountd --bins \
        --manifest-path "$REPO/Cargo.toml"
    echo "== e2e: static binaries in $REPO/target/e2e-static/x86_64-unknown-linux-gnu/release"
fi
