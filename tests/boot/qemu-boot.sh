#!/usr/bin/env bash
# shellcheck disable=SC2054 # QEMU option values are comma-separated lists
# Boots an ISO in QEMU (TCG) and succeeds iff the serial console shows the marker line.
#
# usage: tests/boot/qemu-boot.sh ISO MODE [EXPECT_REGEX]
#   MODE: bios-cd  SeaBIOS, i440fx, ISO on the PIIX IDE CD-ROM
#         bios-hd  SeaBIOS, i440fx, ISO as a virtio-blk disk
#         uefi-cd  OVMF, q35, ISO on the AHCI CD-ROM
#         uefi-hd  OVMF, q35, ISO as an AHCI disk
# env: BOOT_TIMEOUT=240 (s), BOOT_LOG=path (kept; default a temp file, removed on success)
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: $0 ISO MODE [EXPECT_REGEX]" >&2; exit 2; }
ISO=$1 MODE=$2 EXPECT=${3:-ISOFS-BOOT-OK}
TIMEOUT=${BOOT_TIMEOUT:-240}
[ -f "$ISO" ] || { echo "no such ISO: $ISO" >&2; exit 2; }

tmp=$(mktemp -d)
LOG=${BOOT_LOG:-$tmp/serial.log}
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT

args=(-accel tcg -m 1024 -display none -serial "file:$LOG" -no-reboot -nodefaults -vga std)
case "$MODE" in
    bios-*) args+=(-machine pc) ;;
    uefi-*)
        cp /usr/share/OVMF/OVMF_VARS_4M.fd "$tmp/vars.fd"
        args+=(-machine q35
            -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd
            -drive "if=pflash,format=raw,file=$tmp/vars.fd")
        ;;
esac
case "$MODE" in
    bios-cd | uefi-cd) args+=(-drive "file=$ISO,format=raw,media=cdrom,readonly=on,if=none,id=cd"
        -device ide-cd,drive=cd,bootindex=0) ;;
    bios-hd) args+=(-drive "file=$ISO,format=raw,if=none,id=d,snapshot=on"
        -device virtio-blk-pci,drive=d,bootindex=0) ;;
    uefi-hd) args+=(-drive "file=$ISO,format=raw,if=none,id=d,snapshot=on"
        -device ide-hd,drive=d,bootindex=0) ;;
    *) echo "unknown MODE $MODE (bios-cd, bios-hd, uefi-cd, uefi-hd)" >&2; exit 2 ;;
esac

: > "$LOG"
t0=$(date +%s.%N)
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 "${args[@]}" < /dev/null
rc=$?
set -e
t1=$(date +%s.%N)
secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')

if grep -aqE "$EXPECT" "$LOG"; then
    echo "BOOT OK  $MODE ${secs}s: $(grep -aE "$EXPECT" "$LOG" | head -n 1 | tr -d '\r')"
    exit 0
fi
[ $rc -eq 124 ] && why="timeout after ${TIMEOUT}s" || why="qemu exit $rc"
echo "BOOT FAIL $MODE ${secs}s ($why); no line matching /$EXPECT/. Last 40 serial lines:" >&2
tail -n 40 "$LOG" | tr -d '\r' >&2
exit 1
