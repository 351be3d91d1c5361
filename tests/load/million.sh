#!/usr/bin/env bash
# Memory of the node daemon on a huge image (issue 6, item 4): serves an image of N files
# (default 1,000,000) shaped like a real /usr through a FUSE statelite mount and walks it all,
# cold, twice, while sampling the daemon's VmRSS/VmHWM every 0.5 s:
#   walk 1: a stat walk (find -printf: readdir + lstat of every entry);
#   walk 2: readdir of every directory (python scandir) and open+read (or readlink) of every
#           SAMPLE_EVERY-th non-directory.
# Prints peak RSS (VmHWM), RSS after the walks, entries seen, walk times and the daemon's
# inode-table size (litectl status). Fails if the daemon's peak RSS reaches MAX_RSS_MIB, if a
# walk does not see exactly the image's N non-directories (and its directories), or if the
# daemon dies.
#
# Usage: tests/load/million.sh [N]        (as root, with /dev/fuse and cargo)
#
# The image is built once per N and cached in $CACHE_DIR/N (on disk, so it survives reboots
# and a cold walk really reads from disk); it is rebuilt when its completion marker is missing
# or was written by another version of the generator below. 1M files take about 5 GB.
# Env: CACHE_DIR (/var/cache/statelite-million)  MAX_RSS_MIB (64)  SAMPLE_EVERY (50)
#      MAX_INODES (daemon default)  THREADS (daemon default)  PROFILE (release|debug)
#      KEEP=1 (keep the work directory: daemon log, RSS samples)
set -euo pipefail

N=${1:-1000000}
CACHE_DIR=${CACHE_DIR:-/var/cache/statelite-million}
MAX_RSS_MIB=${MAX_RSS_MIB:-64}
SAMPLE_EVERY=${SAMPLE_EVERY:-50}
PROFILE=${PROFILE:-release}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'million.sh: %s\n' "$*" >&2; exit 1; }
now() { printf '%s' "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

if ! [[ $N =~ ^[0-9]+$ ]] || [ "$N" -lt 1000 ]; then
    die "usage: million.sh [N]  (N >= 1000 files, default 1000000)"
fi
[ "$(id -u)" = 0 ] || die "must run as root (FUSE mount, drop_caches)"
[ -c /dev/fuse ] || die "/dev/fuse is missing"
command -v python3 >/dev/null || die "python3 is needed (image generator, walk 2)"
export PATH="$HOME/.cargo/bin:$PATH"

# --- the image generator -----------------------------------------------------------------
# Deterministic for a given N. Layout: usr/ holds nearly everything, in the shapes a real
# /usr has: wide flat directories (bin, sbin, the multiarch lib dir with its .so symlink
# chains, man sections), thousands of tiny directories (share/doc/<package>), regular
# nested ones (locale/<ll>/LC_MESSAGES, icons/<theme>/<size>/<category>) and deep irregular
# trees (include, python dist-packages with __pycache__, kernel modules, share, src).
# Small files (log-normal sizes, median ~1 KiB, capped at 256 KiB), ~5% symlinks (relative,
# and some absolute ones dangling outside the image), a few hard links. Also a small etc/,
# tmp/ and var/ for the litefile entries. "Files" = non-directories (regular files and
# symlinks; each hard-link name counts once, as find sees it).
GENERATOR=$(cat <<'PYEOF'
import json, os, random, sys

root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(n)
BUF = rng.randbytes(1 << 18)
st = {"files": 0, "symlinks": 0, "hardlinks": 0, "dirs": 0, "bytes": 0}
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC

def mkdir(p):
    os.mkdir(p, 0o755)
    st["dirs"] += 1

def size():
    return min(int(rng.lognormvariate(7.0, 1.6)), 1 << 18)

def wfile(p, mode=0o644):
    fd = os.open(p, FLAGS, mode)
    s = size()
    if s:
        off = rng.randrange(0, len(BUF) - s + 1)
        os.write(fd, BUF[off:off + s])
    os.close(fd)
    st["files"] += 1
    st["bytes"] += s

def symlink(target, p):
    os.symlink(target, p)
    st["symlinks"] += 1

def flat(d, count, prefix, ext, mode=0o644, links=0.0, abs_links=0.0, hard=0.0):
    """One wide directory of `count` entries."""
    mkdir(d)
    made = []
    i = 0
    while count > 0:
        name = f"{prefix}{i}{ext}"
        i += 1
        r = rng.random()
        if made and r < links and count >= 1:
            symlink(rng.choice(made), f"{d}/{name}")
        elif r < links + abs_links:
            symlink(f"/etc/alternatives/{name}", f"{d}/{name}")
        elif made and r < links + abs_links + hard:
            os.link(f"{d}/{rng.choice(made)}", f"{d}/{name}")
            st["hardlinks"] += 1
        else:
            wfile(f"{d}/{name}", mode)
            made.append(name)
        count -= 1

def man(d, budget):
    """Man sections: man3 and man1 are the wide ones."""
    weights = (0.30, 0.02, 0.40, 0.03, 0.10, 0.01, 0.04, 0.10)
    parts = [int(budget * w) for w in weights]
    parts[2] += budget - sum(parts)
    for s, p in enumerate(parts, 1):
        flat(f"{d}/man{s}", p, "page", f".{s}.gz", links=0.1)

def split(total, k):
    """Splits total into k skewed parts (Pareto weights: a few big subtrees, many small)."""
    w = [rng.paretovariate(1.1) for _ in range(k)]
    s = sum(w)
    parts = [int(total * x / s) for x in w]
    parts[0] += total - sum(parts)
    return parts

EXTS = [".h", ".py", ".c", ".txt", ".gz", ".png", ".svg", ".ko.xz", ".pm", ".json", ""]

def deep(d, budget, depth, ext, pycache=False):
    """An irregular tree: some files here, the rest split over 2-12 subdirectories."""
    mkdir(d)
    here = budget if budget <= 12 or depth >= 14 else min(budget, rng.randint(1, 30))
    made = []
    for i in range(here):
        name = f"f{i}{ext if rng.random() < 0.8 else rng.choice(EXTS)}"
        if made and rng.random() < 0.05:
            symlink(rng.choice(made), f"{d}/{name}")
        else:
            wfile(f"{d}/{name}")
            made.append(name)
    rest = budget - here
    if pycache and rest > 40 and rng.random() < 0.5:
        c = min(rest, here)
        flat(f"{d}/__pycache__", c, "m", ".cpython-311.pyc")
        rest -= c
    if rest <= 0:
        return
    k = min(rest, rng.randint(2, 12))
    for j, part in enumerate(split(rest, k)):
        if part > 0:
            deep(f"{d}/d{j}", part, depth + 1, ext, pycache)
        elif rng.random() < 0.3:
            mkdir(f"{d}/d{j}")  # empty directories exist too

def many_small(d, budget, lo, hi, names):
    """Many small directories of lo..hi files each (share/doc/<package>/)."""
    mkdir(d)
    i = 0
    while budget > 0:
        c = min(budget, rng.randint(lo, hi))
        sub = f"{d}/pkg{i}"
        mkdir(sub)
        for j in range(c):
            wfile(f"{sub}/{names[j] if j < len(names) else f'extra{j}'}")
        budget -= c
        i += 1

def nested(d, budget, fanouts, leaf_ext):
    """A regular tree: fanouts[i] directories at level i, files split evenly at the leaves."""
    mkdir(d)
    if not fanouts:
        for i in range(budget):
            wfile(f"{d}/f{i}{leaf_ext}")
        return
    k = min(fanouts[0], max(1, budget))
    base, extra = divmod(budget, k)
    for i in range(k):
        nested(f"{d}/n{i}", base + (1 if i < extra else 0), fanouts[1:], leaf_ext)

os.makedirs(root)
for p in ("etc", "tmp", "var", "var/log", "var/lib", "var/lib/misc"):
    mkdir(f"{root}/{p}")
for i in range(20):
    wfile(f"{root}/etc/conf{i}")
for p in ("etc/hostname", "etc/ntp.conf", "tmp/.keep", "var/log/messages",
          "var/log/dmesg", "var/lib/misc/state"):
    wfile(f"{root}/{p}")
small = st["files"]
mkdir(f"{root}/usr")
mkdir(f"{root}/usr/lib")
mkdir(f"{root}/usr/share")
mkdir(f"{root}/usr/share/man")
budget = n - small
shares = [  # (fraction of the files, builder)
    (0.020, lambda b: flat(f"{root}/usr/bin", b, "cmd", "", 0o755, links=0.08, abs_links=0.03, hard=0.005)),
    (0.005, lambda b: flat(f"{root}/usr/sbin", b, "sbin", "", 0o755, links=0.05, abs_links=0.02)),
    (0.030, lambda b: flat(f"{root}/usr/lib/x86_64-linux-gnu", b, "libx", ".so.1", 0o644, links=0.4)),
    (0.060, lambda b: man(f"{root}/usr/share/man", b)),
    (0.080, lambda b: many_small(f"{root}/usr/share/doc", b, 1, 6, ["copyright", "changelog.Debian.gz", "changelog.gz", "README", "NEWS.gz", "TODO"])),
    (0.050, lambda b: nested(f"{root}/usr/share/locale", b, [max(1, min(250, b // 40)), 1], ".mo")),
    (0.080, lambda b: nested(f"{root}/usr/share/icons", b, [6, 12, 10], ".png")),
    (0.070, lambda b: deep(f"{root}/usr/include", b, 0, ".h")),
    (0.200, lambda b: deep(f"{root}/usr/lib/python3", b, 0, ".py", pycache=True)),
    (0.100, lambda b: deep(f"{root}/usr/lib/modules", b, 0, ".ko.xz")),
    (0.200, lambda b: deep(f"{root}/usr/share/misc", b, 0, "")),
]
used = 0
for frac, build in shares:
    b = int(budget * frac)
    build(b)
    used += b
deep(f"{root}/usr/src", budget - used, 0, ".c")
st["nondirs"] = st["files"] + st["symlinks"] + st["hardlinks"]
assert st["nondirs"] == n, st
json.dump(st, sys.stdout)
PYEOF
)
GEN_VERSION=$(printf '%s' "$GENERATOR" | sha256sum | cut -c1-16)

IMGDIR=$CACHE_DIR/$N
IMG=$IMGDIR/image
MARKER=$IMGDIR/complete # "<generator version> <manifest json>", written last
if [ -f "$MARKER" ] && [ "$(cut -d' ' -f1 "$MARKER")" = "$GEN_VERSION" ] && [ -d "$IMG" ]; then
    log "image of $N files cached in $IMG"
else
    log "building the image of $N files in $IMG (once; cached)"
    rm -rf "$IMGDIR"
    mkdir -p "$IMGDIR"
    t=$(now)
    manifest=$(python3 -c "$GENERATOR" "$IMG" "$N")
    printf '%s %s\n' "$GEN_VERSION" "$manifest" >"$MARKER.tmp"
    sync
    mv "$MARKER.tmp" "$MARKER"
    log "image built in $(since "$t") s: $manifest"
fi
manifest=$(cut -d' ' -f2- "$MARKER")
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$manifest" "$1"; }
IMG_DIRS=$(field dirs)
IMG_NONDIRS=$(field nondirs)
[ "$IMG_NONDIRS" = "$N" ] || die "cached manifest says $IMG_NONDIRS files, not $N (delete $IMGDIR)"

# --- build --------------------------------------------------------------------------------
log "building statelite-mountd ($PROFILE)"
build_flags=(-q -p statelite-mountd)
[ "$PROFILE" = release ] && build_flags+=(--release)
(cd "$ROOT" && cargo build "${build_flags[@]}")
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/$PROFILE/statelite-mountd
LITECTL=$TARGET_DIR/$PROFILE/litectl
if [ ! -x "$BIN" ] || [ ! -x "$LITECTL" ]; then die "no binaries in $TARGET_DIR/$PROFILE"; fi

# --- mount --------------------------------------------------------------------------------
W=$(mktemp -d /var/tmp/statelite-million.XXXXXX)
MNT=$W/mnt
CTL=$W/ctl.sock
DAEMON_PID=
SAMPLER_PID=

cleanup() {
    local rc=$?
    set +e
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null
        wait "$SAMPLER_PID" 2>/dev/null
    fi
    if mountpoint -q "$MNT"; then
        "$BIN" umount "$MNT" 2>/dev/null || umount -l "$MNT"
    fi
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$DAEMON_PID" 2>/dev/null && kill "$DAEMON_PID"
        wait "$DAEMON_PID" 2>/dev/null
    fi
    mountpoint -q "$W/vol" && umount "$W/vol"
    if [ "${KEEP:-0}" = 1 ] || [ "$rc" != 0 ]; then
        echo "million.sh: work directory kept: $W (daemon.log, rss.log)" >&2
    elif ! grep -qF " $W/" /proc/self/mounts; then
        rm -rf "$W"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$W"/{vol,state,mnt}
mount -t tmpfs -o size=64m,mode=755 statelite-million-vol "$W/vol" # as on a node
cat >"$W/litefile.csv" <<'EOF'
#image,file,options,comments,disable
"ALL","/tmp/","tmpfs",,
"ALL","/var/log/","tmpfs",,
"ALL","/var/lib/misc/","persistent",,
"ALL","/etc/hostname","persistent",,
"ALL","/etc/ntp.conf","tmpfs",,
"ALL","/usr/local/","tmpfs",,
EOF

daemon_args=(--image "$IMG" --litefile "$W/litefile.csv" --volatile "$W/vol" --state "$W/state"
    --control "$CTL" --foreground)
[ -n "${MAX_INODES:-}" ] && daemon_args+=(--max-inodes "$MAX_INODES")
[ -n "${THREADS:-}" ] && daemon_args+=(--threads "$THREADS")
log "mounting statelite at $MNT"
# In the foreground, started here: $! is the daemon itself (the same serving code as the
# background mode, which only forks first).
STATELITE_LOG=${STATELITE_LOG:-warn} "$BIN" mount "${daemon_args[@]}" "$MNT" \
    </dev/null >"$W/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 300); do
    mountpoint -q "$MNT" && [ -S "$CTL" ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || { cat "$W/daemon.log" >&2; DAEMON_PID=; die "the daemon exited"; }
    sleep 0.1
done
if ! mountpoint -q "$MNT" || [ ! -S "$CTL" ]; then die "not mounted after 30 s"; fi

status_field() { # FIELD: from litectl status (JSON), "?" if unavailable
    "$LITECTL" --socket "$CTL" --json status 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], "?"))' "$1" 2>/dev/null \
        || echo '?'
}
stats_ops() { # the busiest operations and the invalidation count, one line
    "$LITECTL" --socket "$CTL" --json stats 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
ops = sorted(v.get("ops", []), key=lambda o: -o.get("count", 0))
print(" ".join(f"{o['"'"'op'"'"']}={o['"'"'count'"'"']}" for o in ops if o.get("count")) +
      f" | invalidations={v.get('"'"'invalidations'"'"', '"'"'?'"'"')}")' 2>/dev/null || echo '?'
}

# --- the sampler: "time phase VmRSS VmHWM inodes" every 0.5 s (inodes every 2 s) ----------
echo start >"$W/phase"
sampler() {
    local i=0 inodes=- phase rss hwm
    while [ -r "/proc/$DAEMON_PID/status" ]; do
        if [ $((i % 4)) = 0 ]; then inodes=$(status_field inodes); fi
        read -r phase <"$W/phase" || phase='?'
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null) || break
        hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DAEMON_PID/status" 2>/dev/null) || break
        printf '%s %s %s %s %s\n' "$EPOCHREALTIME" "$phase" "$rss" "$hwm" "$inodes"
        i=$((i + 1))
        sleep 0.5
    done
}
sampler >"$W/rss.log" 2>/dev/null &
SAMPLER_PID=$!

kib() { awk -v p="$1" '$1 == p":" { print $2 }' "/proc/$DAEMON_PID/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
phase_peak() { # the largest VmRSS sampled during a phase
    awk -v p="$1" '$2 == p && $3 > m { m = $3 } END { if (m) printf "%.1f MiB", m / 1024; else printf "- (no sample)" }' "$W/rss.log"
}
cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }

RSS_START=$(kib VmRSS)
failed=0
check() { # WHAT GOT WANT
    if [ "$2" != "$3" ]; then
        printf 'million.sh: %s: %s, want %s\n' "$1" "$2" "$3" >&2
        failed=1
    fi
}
# The mount shows the image's directories, plus /.statelite (the daemon's own, empty) and
# /usr/local (a litefile directory entry the image lacks: shown empty).
WANT_DIRS=$((IMG_DIRS + 2))

# --- walk 1: stat walk --------------------------------------------------------------------
log "walk 1: find -printf (readdir + lstat of every entry), cold"
cold
echo walk1 >"$W/phase"
t=$(now)
read -r w1_dirs w1_nondirs w1_bytes < <(find "$MNT" -mindepth 1 -printf '%y %s\n' \
    | awk '$1 == "d" { d++; next } { f++; b += $2 } END { printf "%d %d %.0f\n", d, f, b }')
W1_TIME=$(since "$t")
W1_INODES=$(status_field inodes)
W1_RSS=$(kib VmRSS)
check "walk 1 non-directories" "$w1_nondirs" "$N"
check "walk 1 directories" "$w1_dirs" "$WANT_DIRS"

# --- walk 2: readdir + read a sample ------------------------------------------------------
log "walk 2: readdir of every directory, open+read of every ${SAMPLE_EVERY}th file, cold"
cold
echo walk2 >"$W/phase"
t=$(now)
read -r w2_dirs w2_nondirs w2_reads w2_links w2_bytes < <(python3 - "$MNT" "$SAMPLE_EVERY" <<'PYEOF'
import os, sys
root, every = sys.argv[1], int(sys.argv[2])
dirs = nondirs = reads = links = nbytes = 0
stack = [root]
while stack:
    with os.scandir(stack.pop()) as it:
        for e in it:
            if e.is_dir(follow_symlinks=False):
                dirs += 1
                stack.append(e.path)
                continue
            nondirs += 1
            if nondirs % every:
                continue
            if e.is_symlink():
                os.readlink(e.path)
                links += 1
            else:
                with open(e.path, "rb", buffering=0) as f:
                    while chunk := f.read(1 << 17):
                        nbytes += len(chunk)
                reads += 1
print(dirs, nondirs, reads, links, nbytes)
PYEOF
)
W2_TIME=$(since "$t")
W2_INODES=$(status_field inodes)
check "walk 2 non-directories" "$w2_nondirs" "$N"
check "walk 2 directories" "$w2_dirs" "$WANT_DIRS"

# --- after: let the background trimming settle, then report -------------------------------
echo settle >"$W/phase"
sleep 3
kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon died"
HWM=$(kib VmHWM)
RSS_END=$(kib VmRSS)
INODES_END=$(status_field inodes)
OPS=$(stats_ops)
# Where the resident memory is: the main heap, the other anonymous mappings (glibc's
# per-thread malloc arenas, thread stacks) and mapped files (the binary).
cp "/proc/$DAEMON_PID/smaps" "$W/smaps"
MAP=$(awk '/^[0-9a-f]+-[0-9a-f]+ / { kind = ($6 == "[heap]") ? "heap" : ($6 == "" || $6 ~ /^\[(stack|anon)/) ? "anon" : "file" }
    /^Rss:/ { r[kind] += $2 }
    END { printf "[heap] %.1f MiB, other anonymous %.1f MiB, files %.1f MiB", r["heap"] / 1024, r["anon"] / 1024, r["file"] / 1024 }' "$W/smaps")
kill "$SAMPLER_PID" 2>/dev/null; wait "$SAMPLER_PID" 2>/dev/null || true; SAMPLER_PID=
SAMPLES=$(wc -l <"$W/rss.log")

cat <<EOF

statelite million-file walk: N=$N ($IMG_DIRS directories, $(field symlinks) symlinks, $(field hardlinks) hard links, $(field bytes) bytes)
  daemon: pid $DAEMON_PID, --max-inodes ${MAX_INODES:-default}, threads ${THREADS:-default}, passthrough $(status_field passthrough)
  walk 1 (find -printf, stat of every entry): ${W1_TIME} s, ${w1_nondirs} files + ${w1_dirs} dirs seen (${w1_bytes} bytes by st_size), peak RSS in walk $(phase_peak walk1), RSS after $(mib "$W1_RSS"), inodes kept $W1_INODES
  walk 2 (scandir + read 1/${SAMPLE_EVERY}): ${W2_TIME} s, ${w2_nondirs} files + ${w2_dirs} dirs seen, ${w2_reads} files read (${w2_bytes} bytes), ${w2_links} links read, peak RSS in walk $(phase_peak walk2), inodes kept $W2_INODES
  RSS at start $(mib "$RSS_START"), after the walks (3 s later) $(mib "$RSS_END"), inodes kept $INODES_END
  resident after the walks: $MAP
  peak RSS (VmHWM): $(mib "$HWM")   (limit ${MAX_RSS_MIB} MiB; $SAMPLES samples in $W/rss.log)
  ops: $OPS
EOF

if [ "$HWM" -ge $((MAX_RSS_MIB * 1024)) ]; then
    printf 'million.sh: FAIL: peak RSS %s >= %s MiB\n' "$(mib "$HWM")" "$MAX_RSS_MIB" >&2
    failed=1
fi
[ "$failed" = 0 ] || exit 1
echo "million.sh: PASS"
