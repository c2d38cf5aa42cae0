#!/usr/bin/env bash
# The conventional pipeline, as `nix build .#iso-<host>` runs it: mksquashfs of the closure, a staging
# tree, xorriso, then a sha256sum sidecar. It is the baseline isofs is measured against, and (booting
# with tests/boot/qemu-boot.sh) an independent check of the fixture world and its initrd.
#
# usage: benches/conventional.sh WORLD HOST OUTDIR
# env:   LEVEL=19 (zstd level), DEFAULT_ENTRY=boot|autoinstall, TIMEOUT=10 (isolinux, 1/10 s),
#        JOBS=$(nproc)
set -euo pipefail

[ $# -eq 3 ] || { echo "usage: $0 WORLD HOST OUTDIR" >&2; exit 2; }
WORLD=$(cd "$1" && pwd)
HOST=$2
mkdir -p "$3"
OUTDIR=$(cd "$3" && pwd)
LEVEL=${LEVEL:-19}
DEFAULT_ENTRY=${DEFAULT_ENTRY:-boot}
TIMEOUT=${TIMEOUT:-10}
JOBS=${JOBS:-$(nproc)}
export SOURCE_DATE_EPOCH=315532800

case "$DEFAULT_ENTRY" in boot|autoinstall) ;; *) echo "DEFAULT_ENTRY must be boot or autoinstall" >&2; exit 2 ;; esac
M=$WORLD/manifests/$HOST.json
[ -f "$M" ] || { echo "no manifest $M" >&2; exit 1; }
field() { jq -er ".$1" "$M"; }
real() { printf '%s' "$WORLD/store/${1#/nix/store/}"; }

release=$(field release)
system=$(field system)
arch=${system%%-*}
volid="nixos-$HOST-$release-$arch"
[ ${#volid} -le 32 ] || { echo "volume ID $volid is longer than 32 characters" >&2; exit 1; }
iso_name="nixos-$HOST-$release-$system.iso"
kernel=$(field kernel) initrd=$(field initrd) init=$(field init)
syslinux=$(field syslinux) grub_efi=$(field grubEfi)
params=$(jq -r '.kernelParams | join(" ")' "$M")
registration=$(jq -r '.registration // empty' "$M")
kdir=${kernel#/nix/store/}; kdir=${kdir%%/*}
idir=${initrd#/nix/store/}; idir=${idir%%/*}
cmdline="init=$init root=LABEL=$volid boot.shell_on_fail $params isofs.host=$HOST"

WORK=$OUTDIR/.work-$HOST
rm -rf "$WORK"
mkdir -p "$WORK"

stage() { # name, command...
    local name=$1 t0 t1
    shift
    t0=$(date +%s.%N)
    "$@"
    t1=$(date +%s.%N)
    printf 'stage %-10s %6.2f s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')"
}

squash() {
    local src=() p
    mapfile -t paths < <(jq -r '.storePaths[]' "$M")
    for p in "${paths[@]}"; do src+=("$(real "$p")"); done
    if [ -n "$registration" ]; then
        # nixpkgs puts the closure's registration at the squashfs root under this name.
        cp "$(real "$registration")" "$WORK/nix-path-registration"
        src+=("$WORK/nix-path-registration")
    fi
    mksquashfs "${src[@]}" "$WORK/nix-store.squashfs" -quiet -no-progress \
        -no-hardlinks -keep-as-directory -all-root -b 1048576 -comp zstd -Xcompression-level "$LEVEL" \
        -root-mode 0755 -processors "$JOBS" > /dev/null
}

entries() { # prints a menu entry per label for isolinux
    local label=$1 extra=$2 name=$3
    cat <<EOF

LABEL $label
  MENU LABEL $name
  LINUX /boot/$kdir/bzImage
  APPEND $cmdline$extra
  INITRD /boot/$idir/initrd
EOF
}

staging() {
    local s=$WORK/iso
    mkdir -p "$s/boot/$kdir" "$s/boot/$idir" "$s/isolinux" "$s/EFI/BOOT" "$s/boot/grub"
    cp "$(real "$kernel")" "$s/boot/$kdir/bzImage"
    cp "$(real "$initrd")" "$s/boot/$idir/initrd"
    cp -r "$(real "$syslinux")"/. "$s/isolinux/"
    {
        cat <<EOF
SERIAL 0 115200
UI menu.c32
TIMEOUT $TIMEOUT
MENU TITLE NixOS $release installer for $HOST
DEFAULT $DEFAULT_ENTRY
EOF
        entries boot "" "NixOS $release Installer ($HOST)"
        entries autoinstall " autoinstall" "NixOS $release Installer ($HOST), install automatically"
    } > "$s/isolinux/isolinux.cfg"

    local default_index=0
    [ "$DEFAULT_ENTRY" = boot ] || default_index=1
    cat > "$s/EFI/BOOT/grub.cfg" <<EOF
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_output console serial
terminal_input console serial
search --set=root --file /EFI/nixos-installer-image
set default=$default_index
set timeout=$((TIMEOUT / 10))

menuentry 'NixOS $release Installer ($HOST)' --class installer {
  linux /boot/$kdir/bzImage $cmdline
  initrd /boot/$idir/initrd
}

menuentry 'NixOS $release Installer ($HOST), install automatically' --class installer {
  linux /boot/$kdir/bzImage $cmdline autoinstall
  initrd /boot/$idir/initrd
}
EOF
    cp "$(real "$grub_efi")" "$s/EFI/BOOT/BOOTX64.EFI"
    : > "$s/EFI/nixos-installer-image"
    printf 'source /EFI/BOOT/grub.cfg\n' > "$s/boot/grub/loopback.cfg"

    # efi.img: FAT12 with only EFI/BOOT/{BOOTX64.EFI,grub.cfg}, 110% of the content rounded up to MiB.
    local content size_mib
    content=$(du -cb "$s/EFI/BOOT/BOOTX64.EFI" "$s/EFI/BOOT/grub.cfg" | tail -n 1 | cut -f1)
    size_mib=$(( (content * 11 / 10 + 1048575) / 1048576 ))
    mkdir -p "$WORK/esp/EFI/BOOT"
    cp "$s/EFI/BOOT/BOOTX64.EFI" "$s/EFI/BOOT/grub.cfg" "$WORK/esp/EFI/BOOT/"
    find "$WORK/esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    truncate -s "${size_mib}M" "$s/boot/efi.img"
    mkfs.vfat --invariant -i 12345678 -n EFIBOOT "$s/boot/efi.img" > /dev/null
    mcopy -psvm -i "$s/boot/efi.img" "$WORK/esp/EFI" :: 2> /dev/null
    fsck.vfat -vn "$s/boot/efi.img" > /dev/null

    cp -a "$WORLD/flake" "$s/nixos-flake"
    printf '%s' "$release" > "$s/version.txt"
    mv "$WORK/nix-store.squashfs" "$s/nix-store.squashfs"
}

iso() {
    local s=$WORK/iso guid
    # A GPT disk GUID derived from the volume ID, as nixpkgs does, so the image is reproducible.
    guid=$(printf '%s' "$volid" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
    rm -f "$OUTDIR/$iso_name"
    (cd "$s" && xorriso -report_about SORRY \
        -boot_image any gpt_disk_guid="$guid" \
        -volume_date all_file_dates ="$SOURCE_DATE_EPOCH" \
        -as mkisofs \
        -iso-level 3 \
        -volid "$volid" \
        -appid nixos \
        -publisher nixos \
        -graft-points \
        -full-iso9660-filenames \
        -joliet \
        -eltorito-boot isolinux/isolinux.bin \
        -eltorito-catalog .boot.cat \
        -no-emul-boot \
        -boot-load-size 4 \
        -boot-info-table \
        -isohybrid-mbr isolinux/isohdpfx.bin \
        -eltorito-alt-boot \
        -e boot/efi.img \
        -no-emul-boot \
        -isohybrid-gpt-basdat \
        -r \
        --sort-weight 0 / \
        --sort-weight 1 /isolinux \
        -o "$OUTDIR/$iso_name" \
        .)
}

sidecar() {
    (cd "$OUTDIR" && sha256sum "$iso_name" > "$iso_name.sha256")
}

total0=$(date +%s.%N)
stage squashfs squash
stage staging staging
stage xorriso iso
stage sha256 sidecar
total1=$(date +%s.%N)
printf 'stage %-10s %6.2f s\n' total "$(awk -v a="$total0" -v b="$total1" 'BEGIN{print b-a}')"
rm -rf "$WORK"
echo "$OUTDIR/$iso_name ($(stat -c %s "$OUTDIR/$iso_name") bytes, volume $volid)"
