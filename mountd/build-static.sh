#!/usr/bin/env bash
# Builds a static statelite-mountd (and litectl) for the initramfs.
#
# SPEC §5: the root storage daemon must not depend on any file of the root it serves, so it
# is linked statically (no ld.so, no libc.so to load after switch_root). glibc's static
# libc works on the gnu target with +crt-static; the flag is set here, not in
# .cargo/config.toml, so the rest of the workspace keeps building normally.
# (getaddrinfo in a static glibc binary cannot load NSS modules: boot resolves server names
# from IP literals and /etc/hosts first for that reason.)
#
# Usage: mountd/build-static.sh [extra cargo args]   -> prints the binaries' paths
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --target "$target" -p statelite-mountd --bins "$@"
out="target/$target/release"
for b in statelite-mountd litectl; do
    f="$out/$b"
    # A static binary has no dynamic section: ldd says so and file says "statically linked"
    # (or "static-pie linked").
    if ldd "$f" 2>&1 | grep -q "=>"; then
        echo "build-static.sh: $f is dynamically linked" >&2
        ldd "$f" >&2
        exit 1
    fi
    if command -v file >/dev/null && ! file "$f" | grep -Eq "static(ally|-pie) linked"; then
        echo "build-static.sh: $f: $(file -b "$f")" >&2
        exit 1
    fi
    echo "$f"
done
