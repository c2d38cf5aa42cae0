# Live-system module for the `iso-<host>` configurations of a flake.
#
# One live closure serves every host: the host is read at runtime from `isofs.host=<host>` on the
# kernel command line (isofs writes it into each ISO's boot menus), never baked into the closure.
# The ISO carries the flake at /nixos-flake, which the live system sees under /iso/nixos-flake.
{ config, lib, pkgs, ... }:

let
  flakeDir = "/etc/nixos/flake";

  # Prints the value of `isofs.host=` from /proc/cmdline, or nothing.
  hostFromCmdline = pkgs.writeShellScript "isofs-host" ''
    for word in $(cat /proc/cmdline); do
      case "$word" in
        isofs.host=*) printf '%s\n' "''${word#isofs.host=}"; exit 0 ;;
      esac
    done
    exit 1
  '';

  copyFlake = pkgs.writeShellScript "isofs-copy-flake" ''
    set -eu
    if [ -d /iso/nixos-flake ]; then
      rm -rf ${flakeDir}
      mkdir -p /etc/nixos
      cp -a /iso/nixos-flake ${flakeDir}
      # The ISO is read-only; the copy must be editable before installing.
      chmod -R u+w ${flakeDir}
    fi
  '';

  motd = pkgs.writeShellScript "isofs-motd" ''
    host=$(${hostFromCmdline}) || host="<host>"
    cat <<EOF

    NixOS installer for host: $host
    The flake is in ${flakeDir}. To install:

      sudo disko --mode disko --flake ${flakeDir}#$host
      sudo nixos-install --flake ${flakeDir}#$host --root /mnt
      sudo reboot

    Boot the "autoinstall" menu entry to run these steps unattended.

    EOF
  '';

  autoinstall = pkgs.writeShellScript "isofs-autoinstall" ''
    set -eu
    export PATH=${lib.makeBinPath [ pkgs.coreutils pkgs.util-linux config.nix.package config.system.build.nixos-install ]}:/run/current-system/sw/bin:$PATH
    host=$(${hostFromCmdline}) || { echo "autoinstall: no isofs.host= on the kernel command line" >&2; exit 1; }
    [ -f ${flakeDir}/flake.nix ] || { echo "autoinstall: ${flakeDir}/flake.nix missing" >&2; exit 1; }
    echo "autoinstall: partitioning for $host"
    disko --mode disko --flake "${flakeDir}#$host"
    echo "autoinstall: installing $host"
    nixos-install --flake "${flakeDir}#$host" --root /mnt --no-root-passwd
    echo "autoinstall: $host installed, rebooting"
    # Reached only when every step succeeded (set -e): a failed install stays up for inspection.
    systemctl reboot
  '';
in
{
  environment.systemPackages = lib.optional (pkgs ? disko) pkgs.disko;

  boot.postBootCommands = lib.mkAfter ''
    ${copyFlake}
  '';

  # Generated at boot because the host is known only from the running kernel's command line.
  systemd.services.isofs-motd = {
    description = "Write the installer MOTD for the host named on the kernel command line";
    wantedBy = [ "multi-user.target" ];
    before = [ "getty.target" ];
    serviceConfig.Type = "oneshot";
    script = ''
      ${motd} > /run/isofs-motd
    '';
  };
  users.motdFile = "/run/isofs-motd";

  systemd.services.isofs-autoinstall = {
    description = "Unattended install of the host named by isofs.host=";
    wantedBy = [ "multi-user.target" ];
    after = [ "network-online.target" "isofs-motd.service" ];
    wants = [ "network-online.target" ];
    unitConfig.ConditionKernelCommandLine = "autoinstall";
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${autoinstall}";
      StandardOutput = "journal+console";
      StandardError = "journal+console";
    };
  };
}
