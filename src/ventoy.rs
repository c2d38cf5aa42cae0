//! `ventoy/ventoy.json`: a menu alias and a tip per image, either whole (for a stick that has none
//! yet) or merged into the file a stick already has (`isofs ventoy`).
//!
//! Ventoy matches `image` against the path on its data partition; `cp /mnt/isos/*.iso* /media/ventoy/`
//! puts the images at the root, hence `/<name>`. The sidecars need no entry: Ventoy finds
//! `<name>.sha256` next to the image by itself.

use serde_json::{json, Map, Value};

/// One image on the stick.
pub struct VentoyImage<'a> {
    pub iso_name: &'a str,
    pub host: &'a str,
    pub release: &'a str,
    /// The generic installer: no host to name.
    pub minimal: bool,
}

impl VentoyImage<'_> {
    fn path(&self) -> String {
        format!("/{}", self.iso_name)
    }

    fn alias(&self) -> Value {
        let alias = if self.minimal {
            format!("NixOS {} minimal installer", self.release)
        } else {
            format!("NixOS {} installer for {}", self.release, self.host)
        };
        json!({ "image": self.path(), "alias": alias })
    }

    fn tip(&self) -> Value {
        let tip = if self.minimal {
            "Generic installer without a host flake: partition, nixos-generate-config, then nixos-install."
                .to_string()
        } else {
            format!(
                "Installs host {h}: disko --mode disko --flake /etc/nixos/flake#{h}, then nixos-install. The autoinstall entry does it unattended.",
                h = self.host
            )
        };
        json!({ "image": self.path(), "tip": tip })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VentoyJsonError {
    #[error("not valid JSON: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("{0} is not a JSON {1}")]
    Shape(&'static str, &'static str),
    /// Not UTF-8 text, or not a regular file.
    #[error("cannot be read as JSON text: {0}")]
    NotText(std::io::Error),
}

/// The JSON text (UTF-8, no comments, keys in a fixed order, trailing newline).
pub fn ventoy_json(images: &[VentoyImage]) -> String {
    let doc = json!({
        "menu_alias": images.iter().map(VentoyImage::alias).collect::<Vec<_>>(),
        "menu_tip": { "tips": images.iter().map(VentoyImage::tip).collect::<Vec<_>>() },
    });
    to_text(&doc)
}

/// `existing` (a stick's ventoy.json) with our images' aliases and tips in place of any entries
/// for the same `image`, appended after the user's; every other key and entry is kept, in order.
pub fn merge_ventoy_json(
    existing: &str,
    images: &[VentoyImage],
) -> Result<String, VentoyJsonError> {
    let mut doc: Value = serde_json::from_str(existing)?;
    let root = doc
        .as_object_mut()
        .ok_or(VentoyJsonError::Shape("the document", "object"))?;
    let ours: Vec<String> = images.iter().map(VentoyImage::path).collect();
    replace_entries(
        entry_array(root, "menu_alias")?,
        &ours,
        images.iter().map(VentoyImage::alias),
    );
    let tip_obj = root
        .entry("menu_tip")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or(VentoyJsonError::Shape("menu_tip", "object"))?;
    replace_entries(
        entry_array(tip_obj, "tips")?,
        &ours,
        images.iter().map(VentoyImage::tip),
    );
    Ok(to_text(&doc))
}

fn entry_array<'a>(
    obj: &'a mut Map<String, Value>,
    key: &'static str,
) -> Result<&'a mut Vec<Value>, VentoyJsonError> {
    obj.entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or(VentoyJsonError::Shape(key, "array"))
}

fn replace_entries(list: &mut Vec<Value>, ours: &[String], new: impl Iterator<Item = Value>) {
    list.retain(|e| {
        e.get("image")
            .and_then(Value::as_str)
            .is_none_or(|i| !ours.iter().any(|o| o == i))
    });
    list.extend(new);
}

fn to_text(doc: &Value) -> String {
    let mut s = serde_json::to_string_pretty(doc).expect("plain JSON values");
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
                minimal: false,
            },
            VentoyImage {
                iso_name: "b.iso",
                host: "b",
                release: "25.11",
                minimal: false,
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

    #[test]
    fn merge_keeps_user_keys_and_entries() {
        let user = r#"{
  "control": [{"VTOY_DEFAULT_MENU_MODE": "1"}],
  "menu_alias": [
    {"image": "/win.iso", "alias": "Windows"},
    {"image": "/a.iso", "alias": "old a"}
  ],
  "menu_tip": {"left": "10%", "tips": [{"image": "/a.iso", "tip": "old"}]}
}"#;
        let a = VentoyImage {
            iso_name: "a.iso",
            host: "a",
            release: "25.11",
            minimal: false,
        };
        let s = merge_ventoy_json(user, &[a]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["control", "menu_alias", "menu_tip"]);
        assert_eq!(v["control"][0]["VTOY_DEFAULT_MENU_MODE"], "1");
        let alias = v["menu_alias"].as_array().unwrap();
        assert_eq!(alias.len(), 2);
        assert_eq!(alias[0]["alias"], "Windows");
        assert_eq!(alias[1]["alias"], "NixOS 25.11 installer for a");
        assert_eq!(v["menu_tip"]["left"], "10%");
        assert_eq!(v["menu_tip"]["tips"].as_array().unwrap().len(), 1);
        assert!(merge_ventoy_json("[]", &[]).is_err());
        assert!(merge_ventoy_json(r#"{"menu_alias": 1}"#, &[]).is_err());
    }
}
