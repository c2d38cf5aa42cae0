//! `ventoy/ventoy.json` for a stick that has none yet: a menu alias and a tip per image.
//!
//! Ventoy matches `image` against the path on its data partition; `cp /mnt/isos/*.iso* /media/ventoy/`
//! puts the images at the root, hence `/<name>`. The sidecars need no entry: Ventoy finds
//! `<name>.sha256` next to the image by itself.

use serde_json::json;

/// One image on the stick.
pub struct VentoyImage<'a> {
    pub iso_name: &'a str,
    pub host: &'a str,
    pub release: &'a str,
}

/// The JSON text (UTF-8, no comments, keys in a fixed order, trailing newline).
pub fn ventoy_json(images: &[VentoyImage]) -> String {
    let alias: Vec<_> = images
        .iter()
        .map(|i| {
            json!({
                "image": format!("/{}", i.iso_name),
                "alias": format!("NixOS {} installer for {}", i.release, i.host),
            })
        })
        .collect();
    let tips: Vec<_> = images
        .iter()
        .map(|i| {
            json!({
                "image": format!("/{}", i.iso_name),
                "tip": format!(
                    "Installs host {h}: disko --mode disko --flake /etc/nixos/flake#{h}, then nixos-install. The autoinstall entry does it unattended.",
                    h = i.host
                ),
            })
        })
        .collect();
    let doc = json!({ "menu_alias": alias, "menu_tip": { "tips": tips } });
    let mut s = serde_json::to_string_pretty(&doc).expect("plain JSON values");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_image() {
        let s = ventoy_json(&[
            VentoyImage {
                iso_name: "a.iso",
                host: "a",
                release: "25.11",
            },
            VentoyImage {
                iso_name: "b.iso",
                host: "b",
                release: "25.11",
            },
        ]);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["menu_alias"][1]["image"], "/b.iso");
        assert_eq!(v["menu_tip"]["tips"][0]["image"], "/a.iso");
        assert!(v["menu_tip"]["tips"][0]["tip"]
            .as_str()
            .unwrap()
            .contains("--flake /etc/nixos/flake#a"));
    }
}
