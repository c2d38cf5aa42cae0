//! Hostile inputs through the `isofs` binary: every bad flake, manifest, boot file or flag must end in
//! one clear message naming the file and field, exit code 2 (1 for a full disk), no panic, and no ISO
//! under its final name in `--out`. Odd but legal flake trees must build, checked with osirrox.
//!
//! Each case works on a scratch copy of the world: flake and manifests copied, the store shared (or,
//! when a case edits a store path, a store of symlinks with only that path copied).

mod common;
use common::*;
use serde_json::{json, Value};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const HOST: &str = "shinji";

struct Scratch {
    dir: tempfile::TempDir,
    flake: PathBuf,
    manifests: PathBuf,
    store: PathBuf,
    templates: Option<PathBuf>,
}

impl Scratch {
    fn new() -> Scratch {
        let w = world();
        let dir = tempfile::tempdir().unwrap();
        for sub in ["flake", "manifests"] {
            run(Command::new("cp")
                .arg("-r")
                .arg(w.join(sub))
                .arg(dir.path().join(sub)));
        }
        Scratch {
            flake: dir.path().join("flake"),
            manifests: dir.path().join("manifests"),
            store: w.join("store"),
            templates: None,
            dir,
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn manifest(&self) -> Value {
        let text = std::fs::read_to_string(self.manifests.join(format!("{HOST}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    fn write_manifest(&self, host: &str, m: &Value) {
        let text = serde_json::to_string_pretty(m).unwrap();
        std::fs::write(self.manifests.join(format!("{host}.json")), text).unwrap();
    }

    fn edit_manifest(&self, f: impl FnOnce(&mut Value)) {
        let mut m = self.manifest();
        f(&mut m);
        self.write_manifest(HOST, &m);
    }

    fn write_flake_nix(&self, src: &[u8]) {
        std::fs::write(self.flake.join("flake.nix"), src).unwrap();
    }

    /// Real directory of the store path (under the scratch store) that holds `logical`, copied so a
    /// case may edit it; every other store path stays a symlink to the world's.
    fn own_store_path(&mut self, logical: &str) -> PathBuf {
        let name = logical
            .trim_start_matches("/nix/store/")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let store = self.dir.path().join("store");
        std::fs::create_dir(&store).unwrap();
        for e in std::fs::read_dir(world().join("store")).unwrap() {
            let e = e.unwrap();
            let to = store.join(e.file_name());
            if e.file_name().as_bytes() == name.as_bytes() {
                run(Command::new("cp").arg("-a").arg(e.path()).arg(&to));
            } else {
                std::os::unix::fs::symlink(e.path(), &to).unwrap();
            }
        }
        self.store = store;
        self.store.join(logical.trim_start_matches("/nix/store/"))
    }

    fn command(&self, sub: &str, host: Option<&str>) -> Command {
        let mut c = isofs();
        c.arg(sub);
        c.args(host);
        if sub == "build" {
            c.arg("--out").arg(self.out());
        }
        c.arg("--flake")
            .arg(&self.flake)
            .arg("--manifests")
            .arg(&self.manifests)
            .arg("--store")
            .arg(&self.store)
            .arg("--cache")
            .arg(repo().join("target/test-cache"));
        if let Some(t) = &self.templates {
            c.arg("--templates").arg(t);
        }
        c
    }

    fn build(&self, host: &str, extra: &[&str]) -> Output {
        self.command("build", Some(host))
            .args(extra)
            .output()
            .unwrap()
    }
}

/// Files below `dir` that look like a finished ISO (or were left half-written).
fn isos_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            found.extend(isos_below(&p));
        } else if p.extension().is_some_and(|x| x == "iso" || x == "part") {
            found.push(p);
        }
    }
    found
}

/// One failed run judged: exit code, one `isofs:` line holding every needle, no panic, no ISO left.
fn judge(out: &Output, code: i32, needles: &[&str], out_dir: &Path) -> Result<(), String> {
    let err = String::from_utf8_lossy(&out.stderr);
    let mut problems = Vec::new();
    if out.status.code() != Some(code) {
        problems.push(format!("exit {:?}, expected {code}", out.status.code()));
    }
    if err.contains("panicked") {
        problems.push("panicked".into());
    }
    let messages: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("isofs: ") || l.starts_with("error: "))
        .collect();
    if messages.len() != 1 {
        problems.push(format!("{} error lines, expected one", messages.len()));
    }
    for n in needles {
        if !messages.iter().any(|m| m.contains(n)) {
            problems.push(format!("message lacks {n:?}"));
        }
    }
    let left = isos_below(out_dir);
    if !left.is_empty() {
        problems.push(format!("left behind: {left:?}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n      stderr: {}",
            problems.join("; "),
            err.trim()
        ))
    }
}

fn mkfifo(path: &Path) {
    run(Command::new("mkfifo").arg(path));
}

/// Edits the scratch world; returns extra flags for `build`.
type Setup = Box<dyn Fn(&mut Scratch) -> Vec<String>>;

/// A table case: prepares a scratch world, then runs `build HOST` and is judged.
struct Case {
    name: String,
    setup: Setup,
    code: i32,
    needles: Vec<String>,
}

fn case(
    name: &str,
    needles: &[&str],
    setup: impl Fn(&mut Scratch) -> Vec<String> + 'static,
) -> Case {
    Case {
        name: name.to_string(),
        setup: Box::new(setup),
        code: 2,
        needles: needles.iter().map(|s| s.to_string()).collect(),
    }
}

fn run_table(table: &str, cases: Vec<Case>) {
    let mut failures = Vec::new();
    let n = cases.len();
    for c in cases {
        let mut s = Scratch::new();
        let extra = (c.setup)(&mut s);
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let out = s.build(HOST, &extra);
        let needles: Vec<&str> = c.needles.iter().map(String::as_str).collect();
        if let Err(e) = judge(&out, c.code, &needles, &s.out()) {
            failures.push(format!("  {}: {e}", c.name));
        }
    }
    println!("{table}: {n} bad inputs tried");
    assert!(
        failures.is_empty(),
        "{table}: {} of {n} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn flake_src(hosts: &str) -> String {
    format!("{{ outputs = {{ self, ... }}: let isoHosts = [ {hosts} ]; in {{ }}; }}\n")
}

#[test]
fn bad_flake_nix() {
    let src_case = |name: &str, src: String, needles: &[&str]| {
        case(name, needles, move |s: &mut Scratch| {
            s.write_flake_nix(src.as_bytes());
            vec![]
        })
    };
    let cases = vec![
        src_case(
            "unparsable",
            "{ outputs = { self }: let isoHosts = [ \"shinji\" ".into(),
            &["flake.nix", "cannot parse"],
        ),
        src_case(
            "no isoHosts",
            "{ outputs = _: { }; }".into(),
            &["flake.nix", "isoHosts"],
        ),
        src_case(
            "empty list",
            flake_src(""),
            &["flake.nix", "isoHosts", "empty"],
        ),
        src_case(
            "non-literal list",
            "{ isoHosts = builtins.attrNames ./hosts; }".into(),
            &["flake.nix", "isoHosts", "not a literal list"],
        ),
        src_case(
            "interpolated entry",
            flake_src("\"shinji\" \"x${y}\""),
            &["flake.nix", "isoHosts", "not a string literal"],
        ),
        src_case(
            "identifier entry",
            flake_src("\"shinji\" kenpachi"),
            &["flake.nix", "isoHosts", "not a string literal"],
        ),
        src_case(
            "host with /",
            flake_src("\"shinji\" \"a/b\""),
            &["flake.nix", "isoHosts", "'/'"],
        ),
        src_case(
            "host ..",
            flake_src("\"shinji\" \"..\""),
            &["flake.nix", "isoHosts", "'.'"],
        ),
        src_case(
            "host with space",
            flake_src("\"shinji\" \"a b\""),
            &["flake.nix", "isoHosts", "' '"],
        ),
        src_case(
            "host with escaped tab",
            flake_src("\"shinji\" \"a\\tb\""),
            &["flake.nix", "isoHosts", "'\\t'"],
        ),
        src_case(
            "host with raw control character",
            flake_src("\"shinji\" \"a\u{1}b\""),
            &["flake.nix", "isoHosts", "'\\u{1}'"],
        ),
        src_case(
            "host starting with -",
            flake_src("\"shinji\" \"-x\""),
            &["flake.nix", "isoHosts", "'-'"],
        ),
        src_case(
            "host longer than 63",
            flake_src(&format!("\"shinji\" \"{}\"", "h".repeat(64))),
            &["flake.nix", "isoHosts", "longer than 63"],
        ),
        src_case(
            "host listed twice",
            flake_src("\"shinji\" \"shinji\""),
            &["flake.nix", "isoHosts", "twice"],
        ),
        src_case(
            "hosts differing only in case",
            flake_src("\"shinji\" \"Shinji\""),
            &["flake.nix", "isoHosts", "differ only in case"],
        ),
        case("not UTF-8", &["flake.nix"], |s| {
            s.write_flake_nix(b"{ isoHosts = [ \"shinji\xff\" ]; }");
            vec![]
        }),
        case("missing flake.nix", &["flake.nix"], |s| {
            std::fs::remove_file(s.flake.join("flake.nix")).unwrap();
            vec![]
        }),
        case("host not in flake", &["flake.nix", "unknown host"], |s| {
            s.write_flake_nix(flake_src("\"kenpachi\"").as_bytes());
            vec![]
        }),
    ];
    run_table("flake.nix", cases);
}

/// A host name fine for the flake but too long for the 32-character volume ID nixpkgs derives.
#[test]
fn host_too_long_for_volume_id() {
    let s = Scratch::new();
    let long = "averyveryverylonghostname";
    s.write_flake_nix(flake_src(&format!("\"shinji\" \"{long}\"")).as_bytes());
    let mut m = s.manifest();
    m["host"] = json!(long);
    s.write_manifest(long, &m);
    let out = s.build(long, &[]);
    judge(
        &out,
        2,
        &[&format!("{long}.json"), "host", "volume ID", "32"],
        &s.out(),
    )
    .unwrap();
    // `hosts` validates every manifest the same way.
    let out = s.command("hosts", None).output().unwrap();
    judge(&out, 2, &["volume ID"], &s.out()).unwrap();
}

fn store_path(logical: &str) -> String {
    logical.splitn(5, '/').take(4).collect::<Vec<_>>().join("/")
}

/// A manifest whose `field` (kernel or initrd) is a copy of itself at `/nix/store/<name>`, which
/// would land on `/boot/<name>`.
fn generated_name(field: &'static str, name: &'static str) -> Case {
    let at = format!("/boot/{name}");
    case(
        &format!("{field} named like /boot/{name}"),
        &["shinji.json", field, &at, "taken"],
        move |s| {
            let logical = s.manifest()[field].as_str().unwrap().to_string();
            let real = s.own_store_path(&logical);
            std::fs::copy(real, s.store.join(name)).unwrap();
            let store_path = format!("/nix/store/{name}");
            s.edit_manifest(|m| {
                m[field] = json!(store_path);
                m["storePaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(store_path));
            });
            vec![]
        },
    )
}

#[test]
fn bad_manifests() {
    let edit = |name: &str, needles: &[&str], f: fn(&mut Value)| {
        case(name, needles, move |s: &mut Scratch| {
            s.edit_manifest(f);
            vec![]
        })
    };
    let raw = |name: &str, text: &'static [u8], needles: &[&str]| {
        case(name, needles, move |s: &mut Scratch| {
            std::fs::write(s.manifests.join(format!("{HOST}.json")), text).unwrap();
            vec![]
        })
    };
    let cases = vec![
        raw("invalid JSON", b"{ \"host\": ", &["shinji.json"]),
        raw("not an object", b"[1, 2]", &["shinji.json"]),
        raw("empty file", b"", &["shinji.json"]),
        raw("not UTF-8", b"{ \"host\": \"\xff\" }", &["shinji.json"]),
        case("trailing data", &["shinji.json", "trailing"], |s| {
            let mut t = serde_json::to_string(&s.manifest()).unwrap();
            t.push_str(" {}");
            std::fs::write(s.manifests.join("shinji.json"), t).unwrap();
            vec![]
        }),
        case("missing manifest file", &["shinji.json"], |s| {
            std::fs::remove_file(s.manifests.join("shinji.json")).unwrap();
            vec![]
        }),
        edit("missing kernel", &["shinji.json", "kernel"], |m| {
            m.as_object_mut().unwrap().remove("kernel");
        }),
        edit("missing storePaths", &["shinji.json", "storePaths"], |m| {
            m.as_object_mut().unwrap().remove("storePaths");
        }),
        edit("extra field", &["shinji.json", "bogus"], |m| {
            m["bogus"] = json!(1);
        }),
        edit("release is a number", &["shinji.json", "release"], |m| {
            m["release"] = json!(25.11);
        }),
        edit(
            "kernelParams is a string",
            &["shinji.json", "kernelParams"],
            |m| {
                m["kernelParams"] = json!("quiet");
            },
        ),
        edit(
            "storePaths entry is a number",
            &["shinji.json", "storePaths[3]"],
            |m| {
                m["storePaths"][3] = json!(7);
            },
        ),
        edit("host is null", &["shinji.json", "host"], |m| {
            m["host"] = Value::Null;
        }),
        edit("host mismatch", &["shinji.json", "host", "kenpachi"], |m| {
            m["host"] = json!("kenpachi");
        }),
        edit("empty release", &["shinji.json", "release"], |m| {
            m["release"] = json!("");
        }),
        edit("release with +", &["shinji.json", "release"], |m| {
            m["release"] = json!("25.11+git");
        }),
        edit("system with space", &["shinji.json", "system"], |m| {
            m["system"] = json!("x86_64 linux");
        }),
        edit(
            "kernel outside the store",
            &["shinji.json", "kernel", "/nix/store"],
            |m| {
                m["kernel"] = json!("/boot/vmlinuz");
            },
        ),
        edit(
            "store path outside the store",
            &["shinji.json", "storePaths[12]"],
            |m| {
                m["storePaths"].as_array_mut().unwrap().push(json!("/etc"));
            },
        ),
        edit(
            "store path is /nix/store itself",
            &["shinji.json", "storePaths[12]"],
            |m| {
                m["storePaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("/nix/store/"));
            },
        ),
        edit(
            "store path is not top-level",
            &["shinji.json", "storePaths[0]", "top-level"],
            |m| {
                let p = format!("{}/bin", m["storePaths"][0].as_str().unwrap());
                m["storePaths"][0] = json!(p);
            },
        ),
        edit("kernel with ..", &["shinji.json", "kernel", "'..'"], |m| {
            let k = m["kernel"].as_str().unwrap().to_string();
            m["kernel"] = json!(format!("{}/../../../etc/passwd", store_path(&k)));
        }),
        edit("initrd with .", &["shinji.json", "initrd", "'.'"], |m| {
            let k = m["initrd"].as_str().unwrap().to_string();
            m["initrd"] = json!(format!("{}/./initrd", store_path(&k)));
        }),
        edit(
            "init with //",
            &["shinji.json", "init", "normalised"],
            |m| {
                let k = m["init"].as_str().unwrap().to_string();
                m["init"] = json!(format!("{}//init", store_path(&k)));
            },
        ),
        edit(
            "registration with ..",
            &["shinji.json", "registration"],
            |m| {
                m["registration"] = json!("/nix/store/../../etc/shadow");
            },
        ),
        edit(
            "store path missing on disk",
            &["shinji.json", "storePaths[12]", "missing"],
            |m| {
                m["storePaths"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("/nix/store/00000000000000000000000000000000-gone"));
            },
        ),
        edit(
            "kernel missing on disk",
            &["shinji.json", "kernel", "missing"],
            |m| {
                let k = m["kernel"].as_str().unwrap().to_string();
                m["kernel"] = json!(format!("{}/vmlinuz-gone", store_path(&k)));
            },
        ),
        edit(
            "kernel is a directory",
            &["shinji.json", "kernel", "not a regular file"],
            |m| {
                let k = m["kernel"].as_str().unwrap().to_string();
                m["kernel"] = json!(store_path(&k));
            },
        ),
        edit(
            "kernel outside the closure",
            &["shinji.json", "kernel", "storePaths"],
            |m| {
                let k = m["kernel"].as_str().unwrap().to_string();
                let sp = store_path(&k);
                m["storePaths"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|p| p.as_str() != Some(&sp));
            },
        ),
        edit(
            "registration missing on disk",
            &["shinji.json", "registration"],
            |m| {
                m["registration"] = json!("/nix/store/00000000000000000000000000000000-gone/reg");
            },
        ),
        edit(
            "duplicate store path",
            &["shinji.json", "storePaths[12]", "twice"],
            |m| {
                let first = m["storePaths"][0].clone();
                m["storePaths"].as_array_mut().unwrap().push(first);
            },
        ),
        edit("volumeID too long", &["shinji.json", "volumeID"], |m| {
            m["volumeID"] = json!("x".repeat(33));
        }),
        edit("volumeID empty", &["shinji.json", "volumeID"], |m| {
            m["volumeID"] = json!("");
        }),
        edit(
            "volumeID with bad characters",
            &["shinji.json", "volumeID"],
            |m| {
                m["volumeID"] = json!("nixos shinji!");
            },
        ),
        case(
            "store path is a fifo",
            &[
                "shinji.json",
                "storePaths",
                "00000000000000000000000000000000-pipe",
                "fifo",
            ],
            |s| {
                let kernel = s.manifest()["kernel"].as_str().unwrap().to_string();
                s.own_store_path(&kernel);
                let name = "00000000000000000000000000000000-pipe";
                mkfifo(&s.store.join(name));
                s.edit_manifest(|m| {
                    m["storePaths"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!(format!("/nix/store/{name}")));
                });
                vec![]
            },
        ),
        edit(
            "kernelParams past the kernel's command line",
            &["shinji.json", "kernelParams", "2047"],
            |m| {
                m["kernelParams"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!(format!("x={}", "y".repeat(2100))));
            },
        ),
        // A boot file whose store name is a file isofs writes under /boot, or its directory.
        generated_name("kernel", "efi.img"),
        generated_name("initrd", "grub"),
        case(
            "kernel is a symlink",
            &["shinji.json", "kernel", "not a regular file"],
            |s| {
                let kernel = s.manifest()["kernel"].as_str().unwrap().to_string();
                let real = s.own_store_path(&kernel);
                let moved = real.with_extension("real");
                std::fs::rename(&real, &moved).unwrap();
                std::os::unix::fs::symlink(&moved, &real).unwrap();
                vec![]
            },
        ),
        edit(
            "init missing on disk",
            &["shinji.json", "init", "missing"],
            |m| {
                let k = m["init"].as_str().unwrap().to_string();
                m["init"] = json!(format!("{}/init-gone", store_path(&k)));
            },
        ),
        edit(
            "init is a directory",
            &["shinji.json", "init", "directory"],
            |m| {
                let k = m["init"].as_str().unwrap().to_string();
                m["init"] = json!(store_path(&k));
            },
        ),
        edit(
            "system not x86_64",
            &["shinji.json", "system", "x86_64"],
            |m| {
                m["system"] = json!("aarch64-linux");
            },
        ),
        edit(
            "kernel parameter GRUB would expand",
            &["shinji.json", "kernelParams", "GRUB"],
            |m| {
                m["kernelParams"] = json!(["quiet", "x=$root"]);
            },
        ),
        edit(
            "kernel parameter GRUB would cut",
            &["shinji.json", "kernelParams", "GRUB"],
            |m| {
                m["kernelParams"] = json!(["#comment"]);
            },
        ),
        edit("init with a space", &["shinji.json", "init"], |m| {
            let k = m["init"].as_str().unwrap().to_string();
            m["init"] = json!(format!("{}/in it", store_path(&k)));
        }),
        edit(
            "kernel parameter with a control character",
            &["shinji.json", "kernelParams"],
            |m| {
                m["kernelParams"] = json!(["quiet", "a\u{7}b"]);
            },
        ),
    ];
    run_table("manifests", cases);
}

#[test]
fn bad_boot_files() {
    let syslinux = |name: &str, needles: &[&str], f: fn(&Path)| {
        case(name, needles, move |s: &mut Scratch| {
            let m = s.manifest();
            let dir = s.own_store_path(m["syslinux"].as_str().unwrap());
            f(&dir);
            vec![]
        })
    };
    let cases = vec![
        syslinux(
            "missing isolinux.bin",
            &["shinji.json", "syslinux", "isolinux.bin"],
            |d| {
                std::fs::remove_file(d.join("isolinux.bin")).unwrap();
            },
        ),
        syslinux(
            "missing isohdpfx.bin",
            &["shinji.json", "syslinux", "isohdpfx.bin"],
            |d| {
                std::fs::remove_file(d.join("isohdpfx.bin")).unwrap();
            },
        ),
        syslinux(
            "missing ldlinux.c32",
            &["shinji.json", "syslinux", "ldlinux.c32"],
            |d| {
                std::fs::remove_file(d.join("ldlinux.c32")).unwrap();
            },
        ),
        syslinux(
            "isolinux.bin without isohybrid signature",
            &["shinji.json", "syslinux", "isohybrid signature"],
            |d| {
                let p = d.join("isolinux.bin");
                let mut b = std::fs::read(&p).unwrap();
                b[0x40..0x44].fill(0);
                std::fs::remove_file(&p).unwrap();
                std::fs::write(&p, b).unwrap();
            },
        ),
        // The link may point anywhere: isofs would read what is there into the image.
        syslinux(
            "syslinux directory is a link",
            &["shinji.json", "syslinux", "passes through the link"],
            |d| {
                let real = d.with_extension("elsewhere");
                std::fs::rename(d, &real).unwrap();
                std::os::unix::fs::symlink(&real, d).unwrap();
            },
        ),
        syslinux(
            "isolinux.bin of 16 bytes",
            &["shinji.json", "syslinux", "isohybrid signature"],
            |d| {
                let p = d.join("isolinux.bin");
                std::fs::remove_file(&p).unwrap();
                std::fs::write(&p, [0u8; 16]).unwrap();
            },
        ),
        case(
            "missing GRUB EFI",
            &["shinji.json", "grubEfi", "missing"],
            |s| {
                let m = s.manifest();
                let p = s.own_store_path(m["grubEfi"].as_str().unwrap());
                std::fs::remove_file(p).unwrap();
                vec![]
            },
        ),
        case(
            "kernel unreadable as a file",
            &["shinji.json", "kernel"],
            |s| {
                let m = s.manifest();
                let p = s.own_store_path(m["kernel"].as_str().unwrap());
                std::fs::remove_file(&p).unwrap();
                std::fs::create_dir(&p).unwrap();
                vec![]
            },
        ),
        case(
            "template with unknown placeholder",
            &["isolinux.cfg", "@NOPE@"],
            |s| {
                let t = s.dir.path().join("templates");
                std::fs::create_dir(&t).unwrap();
                std::fs::write(t.join("isolinux.cfg"), "DEFAULT @NOPE@\n").unwrap();
                s.templates = Some(t);
                vec![]
            },
        ),
        case(
            "templates directory missing",
            &["typo", "templates directory", "No such file"],
            |s| {
                s.templates = Some(s.dir.path().join("typo"));
                vec![]
            },
        ),
        case(
            "host left out by --hosts",
            &[
                "flake.nix",
                "'shinji' is in isoHosts",
                "left out by --hosts",
            ],
            |_| vec!["--hosts".into(), "kenpachi".into()],
        ),
    ];
    run_table("boot files", cases);
}

#[test]
fn bad_flags() {
    let flags = |name: &str, needles: &[&str], args: &'static [&'static str]| {
        case(name, needles, move |_| {
            args.iter().map(|a| a.to_string()).collect()
        })
    };
    let cases = vec![
        flags("unknown flag", &["--bogus"], &["--bogus"]),
        flags(
            "compression level 99",
            &["zstd:99"],
            &["--compression", "zstd:99"],
        ),
        flags("compression gzip", &["gzip"], &["--compression", "gzip"]),
        flags("default entry", &["reboot"], &["--default-entry", "reboot"]),
        flags(
            "unknown --hosts",
            &["flake.nix", "nosuch"],
            &["--hosts", "nosuch"],
        ),
        case("missing --config", &["nope.toml"], |s| {
            vec![
                "--config".into(),
                s.dir.path().join("nope.toml").display().to_string(),
            ]
        }),
        // Read as they were, these would wait for a writer forever.
        case(
            "isofs.toml is a dangling link",
            &["isofs.toml", "No such file"],
            |s| {
                std::os::unix::fs::symlink("/nonexistent/isofs.toml", s.flake.join("isofs.toml"))
                    .unwrap();
                vec![]
            },
        ),
        case(
            "isofs.toml is a fifo",
            &["isofs.toml", "not a regular file"],
            |s| {
                mkfifo(&s.flake.join("isofs.toml"));
                vec![]
            },
        ),
        case(
            "manifest is a fifo",
            &["shinji.json", "not a regular file"],
            |s| {
                let m = s.manifests.join(format!("{HOST}.json"));
                std::fs::remove_file(&m).unwrap();
                mkfifo(&m);
                vec![]
            },
        ),
        case(
            "bad isofs.toml key",
            &["isofs.toml", "colour", "line 1"],
            |s| {
                std::fs::write(s.flake.join("isofs.toml"), "colour = \"red\"\n").unwrap();
                vec![]
            },
        ),
        case(
            "bad isofs.toml cache-max",
            &["isofs.toml", "cache-max", "line 2"],
            |s| {
                std::fs::write(s.flake.join("isofs.toml"), "# sizes\ncache-max = -5\n").unwrap();
                vec![]
            },
        ),
        case(
            "bad isofs.toml compression",
            &["isofs.toml", "compression"],
            |s| {
                std::fs::write(s.flake.join("isofs.toml"), "compression = \"lz4\"\n").unwrap();
                vec![]
            },
        ),
        case("store is not a directory", &["store"], |s| {
            s.store = s.dir.path().join("no-store");
            vec![]
        }),
        case("--out is a file", &["out"], |s| {
            std::fs::write(s.out(), b"in the way").unwrap();
            vec![]
        }),
        case("--out/iso is a file", &["iso"], |s| {
            std::fs::create_dir(s.out()).unwrap();
            std::fs::write(s.out().join("iso"), b"in the way").unwrap();
            vec![]
        }),
    ];
    run_table("flags", cases);
}

#[test]
fn bad_source_date_epoch() {
    let s = Scratch::new();
    let out = s
        .command("build", Some(HOST))
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .output()
        .unwrap();
    judge(&out, 2, &["SOURCE_DATE_EPOCH", "yesterday"], &s.out()).unwrap();
    for v in ["-1", "4294967296"] {
        let out = s
            .command("build", Some(HOST))
            .env("SOURCE_DATE_EPOCH", v)
            .output()
            .unwrap();
        judge(&out, 2, &["SOURCE_DATE_EPOCH", v, "32-bit"], &s.out()).unwrap();
    }
}

#[test]
fn explain_offsets() {
    let s = Scratch::new();
    let out = s
        .command("explain", Some(HOST))
        .arg("99999999999")
        .output()
        .unwrap();
    judge(&out, 2, &["past the end"], &s.out()).unwrap();
    let out = s
        .command("explain", Some(HOST))
        .arg("0xzz")
        .output()
        .unwrap();
    judge(&out, 2, &["0xzz"], &s.out()).unwrap();
}

/// A tmpfs mounted at `dir` with `opts`, unmounted on drop; `None` where mounting is not allowed.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, opts: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!(
                "cannot mount a tmpfs at {} (not root?): skipped",
                dir.display()
            );
        }
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn unwritable_out() {
    let s = Scratch::new();
    let Some(_ro) = Tmpfs::mount(&s.out(), "ro,size=1m") else {
        return;
    };
    let out = s.build(HOST, &[]);
    judge(&out, 2, &["Read-only file system"], &s.out()).unwrap();
}

#[test]
fn out_dir_turned_read_only() {
    let s = Scratch::new();
    let Some(_m) = Tmpfs::mount(&s.out(), "size=1m") else {
        return;
    };
    std::fs::create_dir(s.out().join("iso")).unwrap();
    run(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(s.out()));
    let out = s.build(HOST, &[]);
    judge(&out, 2, &[".part", "Read-only file system"], &s.out()).unwrap();
}

/// A disk that fills up mid-write: a runtime failure (exit 1), and the partial file is gone.
#[test]
fn full_disk_leaves_no_partial_iso() {
    let s = Scratch::new();
    let Some(_m) = Tmpfs::mount(&s.out(), "size=4m") else {
        return;
    };
    let out = s.build(HOST, &[]);
    judge(&out, 1, &["No space left on device"], &s.out()).unwrap();
    assert!(!s.out().join("SHA256SUMS").exists());
}

/// Builds the scratch world and extracts `/nixos-flake` with osirrox.
fn build_and_extract(s: &Scratch) -> (Output, PathBuf) {
    let out = s.build(HOST, &[]);
    assert!(
        out.status.success(),
        "build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let iso = PathBuf::from(String::from_utf8(out.stdout.clone()).unwrap().trim());
    let x = s.dir.path().join("x");
    run(Command::new("osirrox")
        .arg("-indev")
        .arg(&iso)
        .args(["-extract", "/nixos-flake"])
        .arg(&x));
    (out, x)
}

#[test]
fn flake_symlinks_are_kept_not_followed() {
    let s = Scratch::new();
    let f = &s.flake;
    std::os::unix::fs::symlink("loop-b", f.join("loop-a")).unwrap();
    std::os::unix::fs::symlink("loop-a", f.join("loop-b")).unwrap();
    std::os::unix::fs::symlink("self", f.join("self")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", f.join("abs-outside")).unwrap();
    std::os::unix::fs::symlink("../../../../..", f.join("rel-outside")).unwrap();
    std::os::unix::fs::symlink("/", f.join("root")).unwrap();
    std::os::unix::fs::symlink("a//b", f.join("double-slash")).unwrap();
    std::os::unix::fs::symlink("//net/x", f.join("double-root")).unwrap();
    let (_, x) = build_and_extract(&s);
    for (name, target) in [
        ("loop-a", "loop-b"),
        ("loop-b", "loop-a"),
        ("self", "self"),
        ("abs-outside", "/etc/shadow"),
        ("rel-outside", "../../../../.."),
        ("root", "/"),
        ("double-slash", "a//b"),
        ("double-root", "//net/x"),
    ] {
        let p = x.join(name);
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(meta.file_type().is_symlink(), "{name} is not a link");
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(target), "{name}");
    }
    let problems = diff_trees(&s.flake, &x, false);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// `--flake` given as a symlink to the flake (a linked `/etc/nixos` is common): the ISO holds the
/// flake's tree at /nixos-flake, not a link.
#[test]
fn flake_given_through_a_symlink() {
    let mut s = Scratch::new();
    let link = s.dir.path().join("flake-link");
    std::os::unix::fs::symlink(&s.flake, &link).unwrap();
    let real = std::mem::replace(&mut s.flake, link);
    let (_, x) = build_and_extract(&s);
    assert!(std::fs::symlink_metadata(&x).unwrap().is_dir());
    let problems = diff_trees(&real, &x, false);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A store path's own top-level `.git` (`fetchgit { leaveDotGit = true; }`) is content, unlike a
/// flake checkout's.
#[test]
fn store_path_keeps_its_own_git_directory() {
    let mut s = Scratch::new();
    let init = s.manifest()["init"].as_str().unwrap().to_string();
    let toplevel = s.own_store_path(&store_path(&init));
    std::fs::create_dir(toplevel.join(".git")).unwrap();
    std::fs::write(toplevel.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    let out = s.build(HOST, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let iso = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let sq = s.dir.path().join("store.squashfs");
    run(Command::new("osirrox")
        .arg("-indev")
        .arg(&iso)
        .args(["-extract", "/nix-store.squashfs"])
        .arg(&sq));
    let list = String::from_utf8(
        run(Command::new("unsquashfs")
            .args(["-l", "-no-progress"])
            .arg(&sq))
        .stdout,
    )
    .unwrap();
    let want = format!(
        "{}/.git/HEAD",
        store_path(&init).trim_start_matches("/nix/store")
    );
    assert!(
        list.lines().any(|l| l.ends_with(&want)),
        "{want} not in:\n{list}"
    );
}

#[test]
fn flake_odd_names_build() {
    use std::ffi::OsStr;
    let s = Scratch::new();
    let names: Vec<Vec<u8>> = vec![
        b"latin1-caf\xe9".to_vec(),
        b"\xff\xfe-not-utf8".to_vec(),
        vec![b'n'; 255],
        "ünïcödé-".repeat(21).into_bytes(),
        b" leading space".to_vec(),
        b"semi;1".to_vec(),
        b"UPPER".to_vec(),
        b"upper".to_vec(),
        b"tab\tname".to_vec(),
    ];
    let d = s.flake.join("odd");
    std::fs::create_dir(&d).unwrap();
    for (i, n) in names.iter().enumerate() {
        std::fs::write(d.join(OsStr::from_bytes(n)), format!("file {i}\n")).unwrap();
    }
    let (_, x) = build_and_extract(&s);
    for (i, n) in names.iter().enumerate() {
        let got = std::fs::read_to_string(x.join("odd").join(OsStr::from_bytes(n)));
        assert_eq!(
            got.ok().as_deref(),
            Some(format!("file {i}\n").as_str()),
            "{:?}",
            String::from_utf8_lossy(n)
        );
    }
    let problems = diff_trees(&s.flake, &x, false);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn flake_with_5000_entries() {
    let s = Scratch::new();
    let d = s.flake.join("many");
    std::fs::create_dir(&d).unwrap();
    for i in 0..5000 {
        std::fs::write(d.join(format!("entry-{i:05}.nix")), format!("{i}\n")).unwrap();
    }
    let (_, x) = build_and_extract(&s);
    assert_eq!(std::fs::read_dir(x.join("many")).unwrap().count(), 5000);
    assert_eq!(
        std::fs::read_to_string(x.join("many/entry-04999.nix")).unwrap(),
        "4999\n"
    );
}

#[test]
fn flake_fifo_and_socket_are_skipped_with_a_warning() {
    let s = Scratch::new();
    run(Command::new("mkfifo").arg(s.flake.join("a-fifo")));
    let sock = s.flake.join("a-socket");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let (out, x) = build_and_extract(&s);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a-fifo: skipping fifo"), "{err}");
    assert!(err.contains("a-socket: skipping socket"), "{err}");
    assert!(!x.join("a-fifo").exists() && !x.join("a-socket").exists());
    assert!(x.join("flake.nix").exists());
}

/// Deeper than ISO 9660's eight levels: either a clear error naming the depth, or (with relocation)
/// an image whose extraction holds the deep file.
#[test]
fn flake_nested_deeper_than_eight_levels() {
    let s = Scratch::new();
    let rel = "d1/d2/d3/d4/d5/d6/d7/d8/d9/d10";
    std::fs::create_dir_all(s.flake.join(rel)).unwrap();
    std::fs::write(s.flake.join(rel).join("deep.txt"), b"bottom\n").unwrap();
    let out = s.build(HOST, &[]);
    if out.status.success() {
        let iso = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let x = s.dir.path().join("x");
        run(Command::new("osirrox")
            .arg("-indev")
            .arg(&iso)
            .args(["-extract", "/nixos-flake"])
            .arg(&x));
        assert_eq!(
            std::fs::read(x.join(rel).join("deep.txt")).unwrap(),
            b"bottom\n"
        );
    } else {
        let code = out.status.code().unwrap_or(-1);
        assert!(code == 1 || code == 2, "exit {code}");
        judge(&out, code, &["nixos-flake/d1", "levels deep"], &s.out()).unwrap();
    }
}

/// Not bad input: a manifest saved by a Windows editor starts with a byte order mark, which is
/// skipped as `ventoy.json`'s is.
#[test]
fn manifest_with_a_byte_order_mark_is_read() {
    let s = Scratch::new();
    let m = s.manifests.join(format!("{HOST}.json"));
    let text = std::fs::read_to_string(&m).unwrap();
    std::fs::write(&m, format!("\u{feff}{text}")).unwrap();
    let out = s.command("hosts", None).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
