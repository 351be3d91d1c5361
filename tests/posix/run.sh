#!/usr/bin/env bash
# POSIX conformance of statelite's writable areas (issue 3).
#
# Mounts a real statelite root over temporary layers and runs, with a plain tmpfs as the
# reference:
#   - pjdfstest on the reference tmpfs, on the mount's volatile (tmpfs) area and on its
#     persistent area (state directory on the filesystem that holds $TMPDIR);
#   - fsx (FSX_OPS operations, seed FSX_SEED) on a file in each writable area.
# Fails if a pjdfstest test that passes on the reference fails (or is skipped) on either
# area, unless it is listed in known-differences.txt; if fsx fails; if the daemon dies; or
# if the image directory is not byte-identical afterwards.
#
# Needs root, /dev/fuse, cargo. Installs what is missing (idempotent): libacl1-dev,
# pjdfstest, fsx, and a `pjdtests` user. Environment:
#   FSX_OPS (100000)  FSX_SEED (7)  KEEP=1 (keep the temp dir)  PROFILE (release|debug)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
KNOWN=$HERE/known-differences.txt
FSX_OPS=${FSX_OPS:-100000}
FSX_SEED=${FSX_SEED:-7}
PROFILE=${PROFILE:-release}
T0=$SECONDS

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (pjdfstest switches users; FUSE mount)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "cargo not found"

# --- tools (idempotent) -------------------------------------------------------------------
if ! command -v pjdfstest >/dev/null; then
    if ! dpkg -s libacl1-dev >/dev/null 2>&1; then
        log "installing libacl1-dev"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libacl1-dev >/dev/null
    fi
    log "installing pjdfstest"
    cargo install pjdfstest --locked
fi
if ! command -v fsx >/dev/null; then
    log "installing fsx"
    cargo install fsx --locked
fi
getent group pjdtests >/dev/null || groupadd pjdtests
id -u pjdtests >/dev/null 2>&1 || useradd -g pjdtests -M -s /usr/sbin/nologin pjdtests

# --- build --------------------------------------------------------------------------------
log "building statelite-mountd ($PROFILE)"
build_flags=(-q -p statelite-mountd)
[ "$PROFILE" = release ] && build_flags+=(--release)
(cd "$ROOT" && cargo build "${build_flags[@]}")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/$PROFILE/statelite-mountd
[ -x "$BIN" ] || die "no binary at $BIN"

# --- layers -------------------------------------------------------------------------------
W=$(mktemp -d "${TMPDIR:-/tmp}/statelite-posix.XXXXXX")
chmod 755 "$W" # pjdfstest's unprivileged users must be able to reach the test dirs
MNT=$W/mnt
DAEMON_PID=

cleanup() {
    local rc=$?
    set +e
    if mountpoint -q "$MNT"; then
        "$BIN" umount "$MNT" 2>/dev/null || umount -l "$MNT"
    fi
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$DAEMON_PID" 2>/dev/null && kill "$DAEMON_PID"
    fi
    for m in "$W/vol" "$W/ref" "$W/ref2"; do
        mountpoint -q "$m" && umount "$m"
    done
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "run.sh: work directory kept: $W" >&2
    elif ! grep -qF " $W/" /proc/self/mounts; then
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W"/{img,vol,state,mnt,ref,ref2}
mount -t tmpfs -o mode=755 statelite-posix-ref "$W/ref"
mount -t tmpfs -o mode=755 statelite-posix-ref2 "$W/ref2"
mount -t tmpfs -o mode=755 statelite-posix-vol "$W/vol" # the volatile store is a tmpfs on a node

# A small image: the writable areas exist in it with content (merged directories).
img=$W/img
mkdir -p "$img"/{etc,tmp,var/lib/pj/sub,usr/bin}
echo 'root:x:0:0::/root:/bin/sh' >"$img/etc/passwd"
printf '#!/bin/sh\necho hi\n' >"$img/usr/bin/hello"
chmod 755 "$img/usr/bin/hello"
echo keep >"$img/tmp/.keep"
echo seed >"$img/var/lib/pj/seed"
echo sub >"$img/var/lib/pj/sub/file"
ln -s ../etc/passwd "$img/tmp/link"
chmod 1777 "$img/tmp"

cat >"$W/litefile.csv" <<'EOF'
#image,file,options,comments,disable
"ALL","/tmp/","tmpfs",,
"ALL","/var/lib/pj/","persistent",,
EOF

cat >"$W/pjdfstest.toml" <<'EOF'
[features]
posix_fallocate = {}
utime_now = {}
utimensat = {}
rename_ctime = {}
[settings]
naptime = 0.01
[dummy_auth]
entries = [ ["nobody", "nogroup"], ["pjdtests", "pjdtests"] ]
EOF

image_digest() {
    # Names, types, modes, owners, sizes, mtimes, ctimes, link targets, then contents.
    (cd "$img" && {
        find . -printf '%p %y %m %U %G %s %T@ %C@ %l\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum
    } | sha256sum | cut -d' ' -f1)
}
IMG_BEFORE=$(image_digest)

# --- mount --------------------------------------------------------------------------------
log "mounting statelite at $MNT"
STATELITE_LOG=${STATELITE_LOG:-warn} "$BIN" mount --image "$img" --litefile "$W/litefile.csv" \
    --volatile "$W/vol" --state "$W/state" --log "$W/daemon.log" "$MNT"
mountpoint -q "$MNT" || die "not mounted"
DAEMON_PID=$(pgrep -o -f -- "--log $W/daemon.log $MNT\$" || true)
[ -n "$DAEMON_PID" ] || die "cannot find the daemon's pid"
TMPFS_AREA=$MNT/tmp
PERS_AREA=$MNT/var/lib/pj
[ -d "$TMPFS_AREA" ] && [ -d "$PERS_AREA" ] || die "writable areas missing in the mount"

# --- pjdfstest ----------------------------------------------------------------------------
# run_pjd NAME DIR SECONDARY: results in $W/NAME.results ("test status" lines).
run_pjd() {
    local name=$1 dir=$2 second=$3 out=$W/$1.out
    local t=$SECONDS rc=0
    (cd "$dir" && RUST_BACKTRACE=0 timeout 600 pjdfstest -c "$W/pjdfstest.toml" -p "$dir" -s "$second") \
        >"$out" 2>&1 || rc=$?
    grep -Eo '^[A-Za-z0-9_:]+[[:space:]]+(ok|FAILED|skipped)$' "$out" |
        awk '{print $1, $2}' | LC_ALL=C sort >"$W/$name.results" || true
    if ! grep -q '^Summary:' "$out"; then
        echo "run.sh: pjdfstest on $name did not finish (exit $rc); see $out" >&2
        tail -20 "$out" >&2
        return 1
    fi
    log "pjdfstest $name: $((SECONDS - t)) s"
}

allowed_list() {
    [ -f "$KNOWN" ] || return 0
    sed -e 's/#.*//' -e 's/[[:space:]]//g' "$KNOWN" | { grep -v '^$' || true; } | LC_ALL=C sort -u
}

FAIL=0
log "pjdfstest on the reference tmpfs"
run_pjd reference "$W/ref" "$W/ref2" || FAIL=1
log "pjdfstest on the volatile (tmpfs) area"
run_pjd tmpfs-area "$TMPFS_AREA" "$PERS_AREA" || FAIL=1
log "pjdfstest on the persistent area"
run_pjd persistent-area "$PERS_AREA" "$TMPFS_AREA" || FAIL=1

count() { awk -v s="$2" '$2 == s' "$1" | wc -l; }
REF=$W/reference.results
awk '$2 == "ok" {print $1}' "$REF" >"$W/reference.ok"
allowed_list >"$W/allowed"
echo "pjdfstest reference-tmpfs: $(count "$REF" ok) passed, $(count "$REF" FAILED) failed, $(count "$REF" skipped) skipped"
for area in tmpfs-area persistent-area; do
    res=$W/$area.results
    # Regressions: passed on the reference, not ok here (failed, skipped or missing).
    awk 'NR == FNR {ok[$1] = 1; next} $2 == "ok" {delete ok[$1]} END {for (t in ok) print t}' \
        "$W/reference.ok" "$res" | LC_ALL=C sort >"$W/$area.regressions"
    LC_ALL=C comm -12 "$W/$area.regressions" "$W/allowed" >"$W/$area.allowed"
    LC_ALL=C comm -23 "$W/$area.regressions" "$W/allowed" >"$W/$area.unexpected"
    nfail=$(count "$res" FAILED)
    nallowed=$(wc -l <"$W/$area.allowed")
    echo "pjdfstest $area: $(count "$res" ok) passed, $nfail failed ($nallowed allowed), $(count "$res" skipped) skipped"
    if [ -s "$W/$area.unexpected" ]; then
        FAIL=1
        echo "  failing on $area but passing on the reference tmpfs:"
        while read -r t; do
            st=$(awk -v t="$t" '$1 == t {print $2}' "$res")
            msg=$(grep -A1 -E "^$t[[:space:]]+FAILED\$" "$W/$area.out" | sed -n 2p | sed 's/^[[:space:]]*//' || true)
            echo "    $t ${st:-missing}${msg:+: $msg}"
        done <"$W/$area.unexpected"
    fi
done
kill -0 "$DAEMON_PID" 2>/dev/null || { echo "run.sh: the daemon died during pjdfstest" >&2; FAIL=1; }

# --- fsx (both areas at once: the persistent one is bound by the disk's fsync) ----------
log "fsx -N $FSX_OPS -S $FSX_SEED on both areas"
declare -A FSX_PID FSX_T
for area in tmpfs-area persistent-area; do
    dir=$TMPFS_AREA
    [ "$area" = persistent-area ] && dir=$PERS_AREA
    mkdir -p "$W/fsx-$area"
    FSX_T[$area]=$(date +%s.%N)
    (
        rc=0
        fsx -N "$FSX_OPS" -S "$FSX_SEED" -P "$W/fsx-$area" "$dir/fsx.$area" \
            >"$W/fsx-$area.out" 2>&1 || rc=$?
        date +%s.%N >"$W/fsx-$area.end"
        exit "$rc"
    ) &
    FSX_PID[$area]=$!
done
for area in tmpfs-area persistent-area; do
    rc=0
    wait "${FSX_PID[$area]}" || rc=$?
    secs=$(awk -v a="${FSX_T[$area]}" -v b="$(cat "$W/fsx-$area.end" 2>/dev/null || date +%s.%N)" \
        'BEGIN {printf "%.1f", b - a}')
    if [ "$rc" = 0 ] && grep -q 'All operations completed A-OK!' "$W/fsx-$area.out"; then
        echo "fsx $area: $FSX_OPS ops OK in $secs s"
    else
        FAIL=1
        echo "fsx $area: FAILED (exit $rc) after $secs s; artifacts in $W/fsx-$area"
        tail -25 "$W/fsx-$area.out" | sed 's/^/    /'
    fi
done
kill -0 "$DAEMON_PID" 2>/dev/null || { echo "run.sh: the daemon died during fsx" >&2; FAIL=1; }

# --- unmount, then the image must be untouched ---------------------------------------------
log "unmounting"
"$BIN" umount "$MNT" || { umount -l "$MNT"; FAIL=1; echo "run.sh: clean umount failed" >&2; }
for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$DAEMON_PID" 2>/dev/null; then
    echo "run.sh: the daemon did not exit after umount" >&2
    FAIL=1
fi
IMG_AFTER=$(image_digest)
if [ "$IMG_BEFORE" = "$IMG_AFTER" ]; then
    echo "image: byte-identical after the run ($IMG_AFTER)"
else
    echo "image: MODIFIED during the run ($IMG_BEFORE -> $IMG_AFTER)"
    FAIL=1
fi

echo "total time: $((SECONDS - T0)) s"
if [ "$FAIL" != 0 ]; then
    echo "POSIX conformance: FAILED"
    exit 1
fi
echo "POSIX conformance: OK"
