#!/bin/bash
# statelite end-to-end checks, run on the booted node by statelite-e2e.service.
# Phase and mode come from the kernel line (e2e.phase=first|second, STATELITE_MODE=).
# Every result is one console line: E2E-OK <what> / E2E-FAIL <what>: <detail>; the
# host-side harness (statelite bootlab) reads them. Ends with E2E-END and a poweroff.
set -u
exec >/dev/console 2>&1

cmdline=$(cat /proc/cmdline)
phase=first
mode=fuse
for w in $cmdline; do
    case "$w" in
        e2e.phase=*) phase=${w#e2e.phase=} ;;
        STATELITE_MODE=*) mode=${w#STATELITE_MODE=} ;;
    esac
done
fails=0
ok() { echo "E2E-OK $*"; }
bad() { echo "E2E-FAIL $*"; fails=$((fails + 1)); }
# expect_erofs WHAT CMD...: the command must fail with "Read-only file system".
expect_erofs() {
    local what=$1; shift
    local out
    if out=$("$@" 2>&1); then bad "$what: succeeded, expected EROFS"
    elif [[ $out == *"Read-only file system"* ]]; then ok "$what (EROFS)"
    else bad "$what: $out"; fi
}

# multi-user.target is reached once this unit (which does not block it) sees it active.
until systemctl is-active -q multi-user.target; do sleep 0.2; done
echo "E2E-MULTI-USER uptime=$(cut -d' ' -f1 /proc/uptime) phase=$phase mode=$mode"

rootfs=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)
if [ "$mode" = fuse ]; then
    [[ $rootfs == fuse* ]] && ok "root is FUSE ($rootfs, $(stat -f -c %T /))" || bad "root is $rootfs, not FUSE"
    if grep -qa '^@statelite-mountd' /proc/[0-9]*/cmdline 2>/dev/null; then ok "daemon runs as @statelite-mountd"
    else bad "no @statelite-mountd process"; fi
    if out=$(/.statelite/bin/litectl status 2>&1) && grep -qE '^degraded:[[:space:]]+no$' <<<"$out"; then ok "litectl status healthy"
    else bad "litectl status: $out"; fi
    echo "$out" | sed 's/^/E2E-INFO litectl: /'
else
    [[ $rootfs == nfs* ]] && ok "root is the NFS image ($rootfs)" || bad "root is $rootfs, expected nfs4 in symlink mode"
fi

# ro with a litetree hit: the tree's file, and locked.
[ "$(cat /etc/motd)" = "motd from the litetree" ] && ok "ro entry served from the litetree" || bad "ro /etc/motd: $(cat /etc/motd)"
expect_erofs "write to ro /etc/motd" sh -c 'echo x > /etc/motd'
# con: the image's file, then the litetree's.
[ "$(cat /etc/e2e-con.conf)" = "$(printf 'con from the image\ncon from the litetree')" ] && ok "con entry concatenated" || bad "con: $(cat /etc/e2e-con.conf)"
# Lock-down: anything not in the litefile is read-only.
expect_erofs "create in /usr" touch /usr/e2e-locked
expect_erofs "write to /etc/os-release" sh -c 'echo x >> /etc/os-release'

# sed -i on a writable file in a read-only directory (FUSE scratch names); symlink mode
# needs a writable directory for sed's temporary file (see the README).
if [ "$mode" = fuse ]; then
    sed -i 's/old/new/' /etc/e2e-rw.conf && [ "$(cat /etc/e2e-rw.conf)" = "value new" ] && [ ! -L /etc/e2e-rw.conf ] \
        && ok "sed -i on a tmpfs file in read-only /etc" || bad "sed -i /etc/e2e-rw.conf: $(cat /etc/e2e-rw.conf)"
else
    echo "value new" > /etc/e2e-rw.conf && ok "write to a tmpfs file" || bad "write /etc/e2e-rw.conf"
fi
sed -i 's/old/new/' /var/e2e/conf && [ "$(cat /var/e2e/conf)" = "value new" ] && ok "sed -i in a tmpfs directory" || bad "sed -i /var/e2e/conf"

case "$phase" in
    first)
        [ ! -e /var/tmp/e2e-volatile ] && ok "tmpfs starts empty" || bad "tmpfs file from an earlier boot"
        echo "volatile" > /var/tmp/e2e-volatile && ok "tmpfs write" || bad "tmpfs write"
        echo "written in boot 1 ($mode)" > /srv/persist/data && sync && ok "persistent write" || bad "persistent write"
        ;;
    second|symlink)
        [ ! -e /var/tmp/e2e-volatile ] && ok "tmpfs reset after reboot" || bad "tmpfs file survived a reboot"
        [ "$(cat /srv/persist/data 2>&1)" = "written in boot 1 (fuse)" ] && ok "persistent file survived the reboot" \
            || bad "persistent /srv/persist/data: $(cat /srv/persist/data 2>&1)"
        ;;
esac
if [ "$phase" = symlink ]; then
    [ "$(cat /srv/persist/powercut 2>&1)" = "fsynced before the power cut" ] && ok "fsync'd data survived the power cut" \
        || bad "after the power cut, /srv/persist/powercut: $(cat /srv/persist/powercut 2>&1)"
fi

# Fault (second boot): the image server disappears and returns under the running node. The
# lab stops nfs-ganesha by its pid on E2E-WAIT-BOUNCE and starts it again seconds later;
# meanwhile the node reads an image file nothing has read yet (the read waits for the
# server), then writes persistent data.
if [ "$phase" = second ]; then
    echo "E2E-WAIT-BOUNCE uptime=$(cut -d' ' -f1 /proc/uptime)"
    # The lab kills the server within a moment of that line and starts it again 8 s later;
    # read in between.
    sleep 5
    t0=$(cut -d' ' -f1 /proc/uptime)
    got=$(cat /etc/e2e-bounce.txt 2>&1)
    t1=$(cut -d' ' -f1 /proc/uptime)
    echo "E2E-INFO bounce read from uptime $t0 to $t1"
    waited=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    [ "$got" = "served across a restart" ] && ok "image read across an NFS server restart (waited $waited s)" \
        || bad "image read across the server restart: $got"
    echo "after the restart" > /srv/persist/after-bounce && [ "$(cat /srv/persist/after-bounce)" = "after the restart" ] \
        && ok "persistent write after the server restart" || bad "persistent write after the server restart"
    if out=$(/.statelite/bin/litectl status 2>&1) && grep -qE '^degraded:[[:space:]]+no$' <<<"$out"; then
        ok "daemon healthy after the server restart"
    else bad "litectl status after the server restart: $out"; fi
    # Then a power cut right after an fsync (the lab kills qemu on E2E-POWERCUT-NOW).
    echo "fsynced before the power cut" > /srv/persist/powercut && sync /srv/persist/powercut \
        && ok "persistent fsync before a power cut" || bad "persistent fsync before a power cut"
fi

# Image update: the host changes /etc/e2e-update.txt in the image and runs imgupdate.
if [ "$mode" = fuse ] && [ "$phase" = first ]; then
    # Read (and so cache) the old version first: seeing v2 then proves the invalidation.
    [ "$(cat /etc/e2e-update.txt)" = "v1" ] && ok "image file read before the update" || bad "before the update: $(cat /etc/e2e-update.txt)"
    echo "E2E-WAIT-IMGUPDATE"
    for _ in $(seq 1 150); do
        [ "$(cat /etc/e2e-update.txt)" = "v2" ] && break
        sleep 0.2
    done
    if [ "$(cat /etc/e2e-update.txt)" = "v2" ]; then ok "image update seen live"
    else
        bad "image update not seen: $(cat /etc/e2e-update.txt 2>&1)"
        echo "E2E-INFO stat: $(stat -c 'ino=%i size=%s mtime=%y' /etc/e2e-update.txt 2>&1)"
        echo "E2E-INFO ls: $(ls -li /etc/e2e-update.txt 2>&1)"
        /.statelite/bin/litectl which /etc/e2e-update.txt 2>&1 | sed 's/^/E2E-INFO which: /'
    fi
    # Let the daemon finish its own generation check before shutting down: an
    # invalidation racing systemd-shutdown's kill spree was seen to hang the poweroff.
    for _ in $(seq 1 100); do
        /.statelite/bin/litectl status 2>/dev/null | grep -qE '^image generation:[[:space:]]+1' && break
        sleep 0.2
    done
    /.statelite/bin/litectl status 2>/dev/null | grep -qE '^image generation:[[:space:]]+1' \
        && ok "daemon reports image generation 1" || bad "daemon never reported generation 1"
fi

echo "E2E-END fails=$fails"
if [ "$phase" = second ]; then
    echo "E2E-POWERCUT-NOW"
    sleep 600
fi
systemctl poweroff --no-block
