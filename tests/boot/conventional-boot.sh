#!/usr/bin/env bash
# End-to-end check of the fixtures without isofs: build the world, build the conventional ISO of each
# host, boot it in every mode the nixpkgs layout supports, and the autoinstall entry once.
# usage: tests/boot/conventional-boot.sh [WORLD] [OUTDIR]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
WORLD=${1:-$REPO/fixtures/world}
OUT=${2:-$(mktemp -d)}
"$REPO/fixtures/make-world.sh" "$WORLD"
"$REPO/tests/boot/check-nix.sh" "$WORLD"
for h in shinji kenpachi; do
    "$REPO/benches/conventional.sh" "$WORLD" "$h" "$OUT"
    iso=$OUT/nixos-$h-25.11-x86_64-linux.iso
    (cd "$OUT" && sha256sum -c "$(basename "$iso").sha256")
    for mode in bios-cd bios-hd uefi-cd uefi-hd; do
        "$REPO/tests/boot/qemu-boot.sh" "$iso" "$mode" "ISOFS-BOOT-OK host=$h autoinstall=no"
    done
done
DEFAULT_ENTRY=autoinstall "$REPO/benches/conventional.sh" "$WORLD" shinji "$OUT/auto"
"$REPO/tests/boot/qemu-boot.sh" "$OUT/auto/nixos-shinji-25.11-x86_64-linux.iso" uefi-cd \
    "ISOFS-BOOT-OK host=shinji autoinstall=yes"
