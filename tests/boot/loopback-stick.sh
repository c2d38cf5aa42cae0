#!/usr/bin/env bash
# Makes a UEFI stick image that boots an ISO *file* the way GRUB-based multiboot sticks do
# (Ventoy's GRUB2 mode, GLIM, Super GRUB2): a FAT partition holds the ISO next to a standalone
# GRUB, whose menu loop-mounts the file, sets iso_path and hands over to the ISO's
# boot/grub/loopback.cfg. The ISO's own menu then passes findiso= to stage 1.
#
# usage: tests/boot/loopback-stick.sh ISO OUT
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 ISO OUT" >&2; exit 2; }
ISO=$1 OUT=$2
name=$(basename "$ISO")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat > "$tmp/grub.cfg" <<CFG
insmod part_msdos
insmod fat
insmod iso9660
insmod loopback
search --no-floppy --set=stick --file /$name
loopback loop (\$stick)/$name
set root=(loop)
set iso_path=/$name
export iso_path
configfile /boot/grub/loopback.cfg
CFG
grub-mkstandalone -O x86_64-efi -o "$tmp/BOOTX64.EFI" "boot/grub/grub.cfg=$tmp/grub.cfg"

# One FAT32 ESP from 1 MiB, big enough for the ISO, GRUB and FAT's own tables.
mib=$(( ($(stat -c %s "$ISO") + $(stat -c %s "$tmp/BOOTX64.EFI")) / 1048576 + 48 ))
rm -f "$OUT"
truncate -s "${mib}M" "$OUT"
printf 'label: dos\nstart=2048, type=ef, bootable\n' | sfdisk --quiet "$OUT"
mkfs.vfat -F 32 --offset 2048 -i 15011984 -n STICK "$OUT" $(( (mib - 1) * 1024 )) > /dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i "$OUT@@1M" ::/EFI ::/EFI/BOOT
mcopy -i "$OUT@@1M" "$tmp/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$OUT@@1M" "$ISO" "::/$name"
