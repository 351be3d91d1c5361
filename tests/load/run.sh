#!/usr/bin/env bash
# Load test of a real statelite mount (issue 6): stress-ng's whole filesystem class, one
# stressor at a time, then 8 fsx runs in parallel, on the writable areas. Fails if any
# stressor or fsx run fails, if the daemon restarts or dies, or if the image changes.
# Env: STRESS_SECONDS (per stressor, default 3), FSX_OPS (default 20000), PROFILE (release),
# STRESS_LANES (default 1): with N > 1 the class is split into N lanes that run at the same
# time, each still one stressor after another, lanes alternating between the tmpfs and the
# persistent area (a 120 s-per-stressor run of the ~54 stressors takes 108 min in one lane).
set -euo pipefail
cd "$(dirname "$0")/../.."
STRESS_SECONDS=${STRESS_SECONDS:-3}
FSX_OPS=${FSX_OPS:-20000}
PROFILE=${PROFILE:-release}

command -v stress-ng >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null; }
command -v fsx >/dev/null || [ -x "$HOME/.cargo/bin/fsx" ] || cargo install fsx --locked -q
FSX=$(command -v fsx || echo "$HOME/.cargo/bin/fsx")
if [ "$PROFILE" = release ]; then cargo build -q --release -p statelite-mountd; else cargo build -q -p statelite-mountd; fi
MOUNTD="target/$PROFILE/statelite-mountd"

work=$(mktemp -d /tmp/statelite-load.XXXXXX)
cleanup() {
    "$MOUNTD" umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
    umount -l "$work/vol" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{img/tmp,img/var/lib,vol,state,mnt}
mount -t tmpfs statelite-load-vol "$work/vol"
echo "image file" > "$work/img/var/lib/existing"
printf '#image,file,options,comments,disable\n"ALL","/tmp/","tmpfs",,\n"ALL","/var/lib/","persistent",,\n' > "$work/litefile.csv"
digest() { (cd "$work/img" && find . -printf '%p %y %m %s %T@\n' | sort && find . -type f -exec sha256sum {} + | sort) | sha256sum; }
before=$(digest)
"$MOUNTD" mount --image "$work/img" --litefile "$work/litefile.csv" --volatile "$work/vol" \
    --state "$work/state" --control "$work/ctl" --log "$work/daemon.log" "$work/mnt"
pid=$(pgrep -f -- "--control $work/ctl" | head -1)

# stress-ng exit codes 3 and 4: a stressor was skipped (no resource / not supported here,
# e.g. fiemap, verity); 7: timing metrics untrustworthy. Anything else, or a failed
# stressor, is a failure.
stress_ok() { # LOG RC
    case "$2" in 0|3|4|7) ;; *) tail -40 "$1"; echo "stress-ng failed (exit $2)" >&2; return 1 ;; esac
    if grep -qiE "^(stress-ng: )?(fail|error)|[^ ]+: FAILED|stressor failed" "$1" \
        || ! grep -q "successful run completed" "$1"; then
        tail -40 "$1"; echo "stress-ng reported a failure ($1)" >&2; return 1
    fi
}
STRESS_LANES=${STRESS_LANES:-1}
if [ "$STRESS_LANES" -le 1 ]; then
    echo "== stress-ng --class filesystem --sequential 1 --timeout ${STRESS_SECONDS}s on the tmpfs area"
    rc=0
    # Run from inside the area too: some stressors (open) create files in the working
    # directory whatever --temp-path says.
    (cd "$work/mnt/tmp" && stress-ng --class filesystem --sequential 1 --timeout "$STRESS_SECONDS" \
        --temp-path "$work/mnt/tmp" --log-brief) > "$work/stress.log" 2>&1 || rc=$?
    stress_ok "$work/stress.log" "$rc"
    grep -E "successful run completed|passed|failed" "$work/stress.log" | tail -3
else
    read -r -a names <<< "$(stress-ng --class filesystem? 2>&1 | sed -n 's/.*stressors: //p')"
    echo "== stress-ng: ${#names[@]} filesystem stressors in $STRESS_LANES lanes, ${STRESS_SECONDS}s each"
    lane_pids=()
    for ((lane = 0; lane < STRESS_LANES; lane++)); do
        area=tmp; [ $((lane % 2)) -eq 1 ] && area=var/lib
        dir="$work/mnt/$area/stress-lane$lane"
        mkdir -p "$dir"
        (
            cd "$dir"
            for ((i = lane; i < ${#names[@]}; i += STRESS_LANES)); do
                n=${names[$i]}
                rc=0
                stress-ng --"$n" 1 --timeout "$STRESS_SECONDS" --temp-path "$dir" --log-brief \
                    > "$work/stress-$n.log" 2>&1 || rc=$?
                # What --class skips on its own (e.g. bind-mount, "pathological").
                if grep -q "No stress workers invoked" "$work/stress-$n.log"; then
                    echo "lane $lane: $n skipped ($(head -n 1 "$work/stress-$n.log"))"
                    continue
                fi
                stress_ok "$work/stress-$n.log" "$rc" || { echo "lane $lane: $n failed" >&2; exit 1; }
                echo "lane $lane ($area): $n ok"
            done
        ) & lane_pids+=($!)
    done
    failed=0
    for p in "${lane_pids[@]}"; do wait "$p" || failed=1; done
    [ "$failed" -eq 0 ] || { echo "a stressor failed" >&2; exit 1; }
    echo "stress-ng: ${#names[@]} stressors passed"
fi

echo "== 8 parallel fsx runs ($FSX_OPS ops each) on the tmpfs and persistent areas"
pids=()
for i in 1 2 3 4 5 6 7 8; do
    area=tmp; [ $((i % 2)) -eq 0 ] && area=var/lib
    "$FSX" -N "$FSX_OPS" -S "$i" "$work/mnt/$area/fsx$i" > "$work/fsx$i.log" 2>&1 & pids+=($!)
done
failed=0
for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then failed=1; tail -20 "$work/fsx$((i + 1)).log"; fi
done
[ "$failed" -eq 0 ] || { echo "an fsx run failed" >&2; exit 1; }
echo "fsx: 8 runs x $FSX_OPS ops OK"

now=$(pgrep -f -- "--control $work/ctl" | head -1 || true)
[ "$now" = "$pid" ] || { echo "the daemon restarted or died (pid $pid -> ${now:-none})" >&2; exit 1; }
echo "daemon pid $pid alive, RSS $(awk '/VmRSS/ {print $2 " " $3}' /proc/$pid/status)"
"$MOUNTD" umount "$work/mnt"
[ "$(digest)" = "$before" ] || { echo "the image changed" >&2; exit 1; }
echo "load test: 2 passed, 0 failed"
