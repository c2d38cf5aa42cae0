//! Boot menu rendering: golden output, default switching, minimal images, user templates, and
//! GRUB's own parser on the result.

use std::process::Command;

use isofs::boot::{kernel_cmdline, DefaultEntry, MenuInput, TemplateError, Templates};

const INIT: &str = "/nix/store/aaaa-nixos-system-nixos-25.11/init";

fn menu(params: &[String], default_entry: DefaultEntry, minimal: bool) -> MenuInput<'_> {
    MenuInput {
        host: "shinji",
        volume_id: "nixos-shinji-25.11-x86_64",
        release: "25.11",
        kernel: "/boot/bbbb-linux-6.12.1/bzImage",
        initrd: "/boot/cccc-initrd-linux-6.12.1/initrd",
        init: INIT,
        kernel_params: params,
        default_entry,
        minimal,
    }
}

fn params() -> Vec<String> {
    vec!["console=ttyS0,115200n8".into(), "loglevel=4".into()]
}

const CMDLINE: &str = "init=/nix/store/aaaa-nixos-system-nixos-25.11/init \
root=LABEL=nixos-shinji-25.11-x86_64 boot.shell_on_fail console=ttyS0,115200n8 loglevel=4 \
isofs.host=shinji";

#[test]
fn isolinux_golden() {
    let p = params();
    let cfg = Templates::builtin()
        .isolinux_cfg(&menu(&p, DefaultEntry::Install, false))
        .unwrap();
    let expected = format!(
        "SERIAL 0 115200
PROMPT 1
TIMEOUT 50
DEFAULT install

SAY NixOS 25.11 installer for shinji
SAY   install      boot the installer
SAY   autoinstall  boot and install shinji unattended (erases its disks)

LABEL install
  LINUX /boot/bbbb-linux-6.12.1/bzImage
  INITRD /boot/cccc-initrd-linux-6.12.1/initrd
  APPEND {CMDLINE}

LABEL autoinstall
  LINUX /boot/bbbb-linux-6.12.1/bzImage
  INITRD /boot/cccc-initrd-linux-6.12.1/initrd
  APPEND {CMDLINE} autoinstall
"
    );
    assert_eq!(cfg, expected);
}

#[test]
fn grub_golden() {
    let p = params();
    let cfg = Templates::builtin()
        .grub_cfg(&menu(&p, DefaultEntry::Install, false))
        .unwrap();
    let expected = format!(
        "serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial

search --set=root --file /EFI/nixos-installer-image

# Booted as an ISO file through boot/grub/loopback.cfg (e.g. Ventoy's GRUB2 mode): stage 1
# finds the file by findiso= instead of a device with the volume label.
if [ ${{iso_path}} ] ; then
  set isoboot=\"findiso=${{iso_path}}\"
fi

set timeout=5
set default=0

menuentry \"NixOS 25.11 installer for shinji\" {{
  linux /boot/bbbb-linux-6.12.1/bzImage {CMDLINE} ${{isoboot}}
  initrd /boot/cccc-initrd-linux-6.12.1/initrd
}}

menuentry \"NixOS 25.11 installer for shinji - autoinstall (erases the disks of shinji)\" {{
  linux /boot/bbbb-linux-6.12.1/bzImage {CMDLINE} autoinstall ${{isoboot}}
  initrd /boot/cccc-initrd-linux-6.12.1/initrd
}}
"
    );
    assert_eq!(cfg, expected);
}

#[test]
fn default_entry_switches_both_menus() {
    let p = params();
    let t = Templates::builtin();
    let m = menu(&p, DefaultEntry::Autoinstall, false);
    let isolinux = t.isolinux_cfg(&m).unwrap();
    assert!(isolinux.contains("\nDEFAULT autoinstall\n"), "{isolinux}");
    let grub = t.grub_cfg(&m).unwrap();
    assert!(grub.contains("\nset default=1\n"), "{grub}");
}

#[test]
fn minimal_has_one_entry_and_no_host() {
    let p = params();
    let t = Templates::builtin();
    let m = menu(&p, DefaultEntry::Install, true);
    let isolinux = t.isolinux_cfg(&m).unwrap();
    assert_eq!(isolinux.matches("LABEL ").count(), 1, "{isolinux}");
    assert!(!isolinux.contains("autoinstall"), "{isolinux}");
    assert!(!isolinux.contains("isofs.host"), "{isolinux}");
    assert!(
        isolinux.contains("SAY NixOS 25.11 installer\n"),
        "{isolinux}"
    );
    let grub = t.grub_cfg(&m).unwrap();
    assert_eq!(grub.matches("menuentry ").count(), 1, "{grub}");
    assert!(!grub.contains("autoinstall"), "{grub}");
    assert!(!grub.contains("isofs.host"), "{grub}");
    assert!(!kernel_cmdline(&m, false).contains("isofs.host"));

    let m = menu(&p, DefaultEntry::Autoinstall, true);
    assert!(matches!(
        t.grub_cfg(&m),
        Err(TemplateError::NoAutoinstallEntry)
    ));
}

#[test]
fn user_templates_override_and_unknown_placeholders_fail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("isolinux.cfg"),
        "DEFAULT @DEFAULT@\n# @HOST@ on @VOLUME_ID@, mail root@example.org\nLABEL install\n",
    )
    .unwrap();
    let t = Templates::load(dir.path()).unwrap();
    let p = params();
    let m = menu(&p, DefaultEntry::Install, false);
    assert_eq!(
        t.isolinux_cfg(&m).unwrap(),
        "DEFAULT install\n# shinji on nixos-shinji-25.11-x86_64, mail root@example.org\nLABEL install\n"
    );
    // DEFAULT naming an entry the template lacks would boot nothing after the timeout.
    let auto = menu(&p, DefaultEntry::Autoinstall, false);
    assert!(matches!(
        t.isolinux_cfg(&auto),
        Err(TemplateError::NoDefaultEntry { entry, .. }) if entry == "LABEL autoinstall"
    ));
    // grub.cfg was not overridden.
    assert_eq!(
        t.grub_cfg(&m).unwrap(),
        Templates::builtin().grub_cfg(&m).unwrap()
    );

    let grub_path = dir.path().join("grub.cfg");
    std::fs::write(
        &grub_path,
        "set default=@DEFAULT@\nlinux @KERNEL@ @CMDLNE@\n",
    )
    .unwrap();
    let err = Templates::load(dir.path()).unwrap_err();
    match &err {
        TemplateError::UnknownPlaceholder {
            file,
            line,
            placeholder,
        } => {
            assert_eq!(file, &grub_path.display().to_string());
            assert_eq!(*line, 2);
            assert_eq!(placeholder, "CMDLNE");
        }
        other => panic!("unexpected error {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("grub.cfg:2") && message.contains("@CMDLNE@"),
        "{message}"
    );
}

#[test]
fn loopback_defers_to_the_efi_menu() {
    assert_eq!(
        Templates::builtin().loopback_cfg(),
        "source /EFI/BOOT/grub.cfg\n"
    );
}

#[test]
fn grub_script_check_accepts_every_variant() {
    let p = params();
    let dir = tempfile::tempdir().unwrap();
    for (default_entry, minimal) in [
        (DefaultEntry::Install, false),
        (DefaultEntry::Autoinstall, false),
        (DefaultEntry::Install, true),
    ] {
        let cfg = Templates::builtin()
            .grub_cfg(&menu(&p, default_entry, minimal))
            .unwrap();
        let path = dir.path().join("grub.cfg");
        std::fs::write(&path, &cfg).unwrap();
        let out = Command::new("grub-script-check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "grub-script-check rejected:\n{cfg}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The checker really checks: an unclosed menuentry is refused.
    let path = dir.path().join("bad.cfg");
    std::fs::write(&path, "menuentry \"x\" {\n linux /k\n").unwrap();
    let out = Command::new("grub-script-check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// The kernel keeps 2047 bytes of its command line (with the loaders' `BOOT_IMAGE=`) and cuts the
/// rest silently, which would lose `isofs.host=` and `autoinstall`: such menus are refused, to the
/// byte; a minimal image, which has no autoinstall line, is measured without ` autoinstall`.
#[test]
fn command_line_must_fit_the_kernel() {
    let t = Templates::builtin();
    let with_filler = |minimal: bool, total: usize| {
        let base = menu(&[], DefaultEntry::Install, minimal);
        let line = kernel_cmdline(&base, !minimal);
        let used = "BOOT_IMAGE= ".len() + base.kernel.len() + line.len() + " x=".len();
        vec![format!("x={}", "y".repeat(total - used))]
    };
    for minimal in [false, true] {
        let fits = with_filler(minimal, 2047);
        assert!(t
            .grub_cfg(&menu(&fits, DefaultEntry::Install, minimal))
            .is_ok());
        let over = with_filler(minimal, 2048);
        let err = t
            .isolinux_cfg(&menu(&over, DefaultEntry::Install, minimal))
            .unwrap_err();
        assert!(
            matches!(err, TemplateError::CommandLineTooLong(2048)),
            "{err}"
        );
    }
}

/// Paths go into both menus as they are, so GRUB's special characters are refused there too.
#[test]
fn grub_special_characters_in_paths_are_refused() {
    let t = Templates::builtin();
    let p = params();
    for bad in [";", "#", "{", "|", "&", "<"] {
        let kernel = format!("/boot/bbbb-linux{bad}x/bzImage");
        let mut m = menu(&p, DefaultEntry::Install, false);
        m.kernel = &kernel;
        assert!(
            matches!(t.grub_cfg(&m), Err(TemplateError::BadValue { .. })),
            "{bad}"
        );
    }
}
