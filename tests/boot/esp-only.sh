#!/usr/bin/env bash
# Copies an ISO and makes its El Torito EFI entry non-bootable (boot indicator 0x88 -> 0x00), so that
# OVMF, given the copy as a disk, can only boot through the ESP of the partition table.
#
# usage: tests/boot/esp-only.sh ISO OUT
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 ISO OUT" >&2; exit 2; }
ISO=$1 OUT=$2

byte_at() { od -An -tu1 -j "$2" -N 1 "$1" | tr -d ' '; }
u32le_at() { od -An -tu4 --endian=little -j "$2" -N 4 "$1" | tr -d ' '; }

# Sector 17: El Torito boot record, "EL TORITO SPECIFICATION" at 7, catalog LBA (u32 LE) at 0x47.
br=$((17 * 2048))
[ "$(dd if="$ISO" bs=1 skip=$((br + 7)) count=23 2> /dev/null)" = "EL TORITO SPECIFICATION" ] \
    || { echo "$ISO: no El Torito boot record at sector 17" >&2; exit 1; }
cat=$(( $(u32le_at "$ISO" $((br + 0x47))) * 2048 ))

# Catalog: validation entry (32 bytes), default entry (32), then section headers (0x90 more follow,
# 0x91 last) each followed by its entries; platform 0xEF marks EFI.
off=$((cat + 64))
patched=""
cp --reflink=auto "$ISO" "$OUT"
while [ $off -lt $((cat + 2048)) ]; do
    hdr=$(byte_at "$ISO" $off)
    [ "$hdr" = 144 ] || [ "$hdr" = 145 ] || break
    platform=$(byte_at "$ISO" $((off + 1)))
    count=$(od -An -tu2 --endian=little -j $((off + 2)) -N 2 "$ISO" | tr -d ' ')
    for ((i = 1; i <= count; i++)); do
        e=$((off + 32 * i))
        if [ "$platform" = 239 ] && [ "$(byte_at "$ISO" $e)" = 136 ]; then
            printf '\000' | dd of="$OUT" bs=1 seek=$e conv=notrunc status=none
            patched+=" $e"
        fi
    done
    off=$((off + 32 * (count + 1)))
    [ "$hdr" = 145 ] && break
done
[ -n "$patched" ] || { rm -f "$OUT"; echo "$ISO: no bootable EFI entry in the boot catalog" >&2; exit 1; }
echo "cleared EFI boot indicator at byte offset(s):$patched"
