//! Per-host boot menus: `isolinux.cfg` (BIOS), `grub.cfg` (UEFI, in efi.img and on the ISO) and
//! `boot/grub/loopback.cfg`, rendered from templates, plus the kernel command line they share.
//!
//! One live system closure serves every host: the menus tell it which host it is via
//! `isofs.host=<host>` on the command line, and the autoinstall entry adds `autoinstall`.
//!
//! # Templates
//!
//! Built-in templates are used unless a template directory provides `isolinux.cfg` and/or
//! `grub.cfg` (each file present overrides its built-in counterpart). Placeholders are
//! `@NAME@` with `NAME` made of `A`–`Z`, `0`–`9` and `_`; any other `@` is literal text. An unknown
//! placeholder is an error naming the file, line and placeholder.
//!
//! | Placeholder | Value |
//! |---|---|
//! | `@HOST@` | host name (empty for a minimal image) |
//! | `@VOLUME_ID@` | ISO volume ID, e.g. `nixos-shinji-25.11-x86_64` |
//! | `@RELEASE@` | NixOS release, e.g. `25.11` |
//! | `@TITLE@` | `NixOS <release> installer for <host>` (`NixOS <release> installer` if minimal) |
//! | `@KERNEL@` | kernel path on the ISO, e.g. `/boot/<kernel store path basename>/bzImage` |
//! | `@INITRD@` | initrd path on the ISO |
//! | `@CMDLINE@` | kernel command line of the install entry (see [`kernel_cmdline`]) |
//! | `@CMDLINE_AUTOINSTALL@` | the same plus ` autoinstall` |
//! | `@DEFAULT@` | the default entry: in `isolinux.cfg` its label (`install` or `autoinstall`), in `grub.cfg` its index (`0` or `1`) |
//! | `@AUTOINSTALL_BEGIN@` … `@AUTOINSTALL_END@` | each on a line of its own: the lines between are kept only when the image has an autoinstall entry (not minimal) |
//!
//! The built-in `isolinux.cfg` names its entries `LABEL install` and `LABEL autoinstall`, and the
//! built-in `grub.cfg` lists install first, autoinstall second; a user template that reorders or
//! renames entries must keep `@DEFAULT@` meaningful.
//!
//! Substituted values are checked: none may contain control characters (a newline in a kernel
//! parameter would inject menu commands); host, release, volume ID and paths must not contain
//! whitespace, and none may contain what GRUB's script lexer would interpret (`$ ; # " ' \ { } | &
//! < >` and backquote) where isolinux passes it on as it is. The longest command line must fit
//! the kernel's 2047 bytes.

use std::path::Path;
use std::str::FromStr;

const BUILTIN_ISOLINUX: &str = include_str!("templates/isolinux.cfg");
const BUILTIN_GRUB: &str = include_str!("templates/grub.cfg");

/// Which menu entry boots when the timeout expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultEntry {
    #[default]
    Install,
    Autoinstall,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown default entry {0:?}: expected \"install\" or \"autoinstall\"")]
pub struct ParseDefaultEntryError(String);

impl FromStr for DefaultEntry {
    type Err = ParseDefaultEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "install" => Ok(DefaultEntry::Install),
            "autoinstall" => Ok(DefaultEntry::Autoinstall),
            _ => Err(ParseDefaultEntryError(s.to_string())),
        }
    }
}

impl DefaultEntry {
    fn label(self) -> &'static str {
        match self {
            DefaultEntry::Install => "install",
            DefaultEntry::Autoinstall => "autoinstall",
        }
    }

    /// Its position in grub.cfg's top-level menu, which `set default=` counts.
    fn position(self) -> usize {
        match self {
            DefaultEntry::Install => 0,
            DefaultEntry::Autoinstall => 1,
        }
    }
}

/// What the menus are rendered for.
pub struct MenuInput<'a> {
    pub host: &'a str,
    pub volume_id: &'a str,
    pub release: &'a str,
    /// Kernel path on the ISO, e.g. `/boot/<kernel store path basename>/bzImage`.
    pub kernel: &'a str,
    pub initrd: &'a str,
    /// `init` of the system toplevel (inside the squashfs store).
    pub init: &'a str,
    pub kernel_params: &'a [String],
    pub default_entry: DefaultEntry,
    /// No host: no autoinstall entry and no `isofs.host=`.
    pub minimal: bool,
}

/// x86's `COMMAND_LINE_SIZE` less its terminating NUL.
const MAX_CMDLINE: usize = 2047;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: unknown placeholder @{placeholder}@")]
    UnknownPlaceholder {
        file: String,
        line: usize,
        placeholder: String,
    },
    #[error("{file}:{line}: {problem}")]
    Block {
        file: String,
        line: usize,
        problem: &'static str,
    },
    #[error("{what} {value:?} cannot go into a boot menu: {why}")]
    BadValue {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("default entry \"autoinstall\" requested, but a minimal image (no host) has no autoinstall entry")]
    NoAutoinstallEntry,
    #[error("kernel command line of {0} bytes (with BOOT_IMAGE=): the x86 kernel keeps {MAX_CMDLINE} and cuts the rest; shorten kernelParams")]
    CommandLineTooLong(usize),
    #[error("{file}: the default entry is {entry}, but the menu has no such entry")]
    NoDefaultEntry { file: String, entry: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    Host,
    VolumeId,
    Release,
    Title,
    Kernel,
    Initrd,
    Cmdline,
    CmdlineAutoinstall,
    Default,
    AutoinstallBegin,
    AutoinstallEnd,
}

impl Placeholder {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HOST" => Placeholder::Host,
            "VOLUME_ID" => Placeholder::VolumeId,
            "RELEASE" => Placeholder::Release,
            "TITLE" => Placeholder::Title,
            "KERNEL" => Placeholder::Kernel,
            "INITRD" => Placeholder::Initrd,
            "CMDLINE" => Placeholder::Cmdline,
            "CMDLINE_AUTOINSTALL" => Placeholder::CmdlineAutoinstall,
            "DEFAULT" => Placeholder::Default,
            "AUTOINSTALL_BEGIN" => Placeholder::AutoinstallBegin,
            "AUTOINSTALL_END" => Placeholder::AutoinstallEnd,
            _ => return None,
        })
    }
}

/// One template text and where it came from (for error messages).
#[derive(Clone, Debug)]
struct Template {
    origin: String,
    text: String,
}

impl Template {
    fn builtin(name: &str, text: &str) -> Self {
        Template {
            origin: format!("built-in {name}"),
            text: text.to_string(),
        }
    }

    /// Renders with `value` supplying each placeholder; `autoinstall` keeps the marked blocks.
    fn expand(
        &self,
        autoinstall: bool,
        value: impl Fn(Placeholder) -> String,
    ) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.text.len());
        let mut in_block: Option<usize> = None;
        for (i, line) in self.text.split_inclusive('\n').enumerate() {
            let number = i + 1;
            let block_err = |problem| TemplateError::Block {
                file: self.origin.clone(),
                line: number,
                problem,
            };
            let pieces = self.tokens(line, number)?;
            let markers = pieces
                .iter()
                .filter(|p| {
                    matches!(
                        p,
                        Piece::Var(Placeholder::AutoinstallBegin | Placeholder::AutoinstallEnd)
                    )
                })
                .count();
            if markers > 0 {
                let [Piece::Var(marker)] = pieces.as_slice() else {
                    return Err(block_err(
                        "@AUTOINSTALL_BEGIN@/@AUTOINSTALL_END@ must stand alone on their line",
                    ));
                };
                in_block = match (marker, in_block) {
                    (Placeholder::AutoinstallBegin, None) => Some(number),
                    (Placeholder::AutoinstallEnd, Some(_)) => None,
                    (Placeholder::AutoinstallBegin, Some(_)) => {
                        return Err(block_err("@AUTOINSTALL_BEGIN@ inside an open block"))
                    }
                    _ => return Err(block_err("@AUTOINSTALL_END@ without @AUTOINSTALL_BEGIN@")),
                };
                continue;
            }
            if in_block.is_some() && !autoinstall {
                continue;
            }
            for piece in pieces {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Var(p) => out.push_str(&value(p)),
                }
            }
        }
        match in_block {
            Some(line) => Err(TemplateError::Block {
                file: self.origin.clone(),
                line,
                problem: "@AUTOINSTALL_BEGIN@ is never closed",
            }),
            None => Ok(out),
        }
    }

    /// Splits one line into literal text and placeholders. Marker lines are recognised with their
    /// surrounding whitespace (and line end) dropped.
    fn tokens<'t>(&self, line: &'t str, number: usize) -> Result<Vec<Piece<'t>>, TemplateError> {
        let trimmed = line.trim();
        if let Some(marker) = trimmed
            .strip_prefix('@')
            .and_then(|s| s.strip_suffix('@'))
            .and_then(Placeholder::from_name)
            .filter(|p| {
                matches!(
                    p,
                    Placeholder::AutoinstallBegin | Placeholder::AutoinstallEnd
                )
            })
        {
            return Ok(vec![Piece::Var(marker)]);
        }
        let mut pieces = Vec::new();
        let mut rest = line;
        while let Some(at) = rest.find('@') {
            let after = &rest[at + 1..];
            let name_len = after
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(after.len());
            if name_len == 0 || !after[name_len..].starts_with('@') {
                pieces.push(Piece::Text(&rest[..at + 1]));
                rest = after;
                continue;
            }
            let name = &after[..name_len];
            let placeholder =
                Placeholder::from_name(name).ok_or_else(|| TemplateError::UnknownPlaceholder {
                    file: self.origin.clone(),
                    line: number,
                    placeholder: name.to_string(),
                })?;
            pieces.push(Piece::Text(&rest[..at]));
            pieces.push(Piece::Var(placeholder));
            rest = &after[name_len + 1..];
        }
        pieces.push(Piece::Text(rest));
        pieces.retain(|p| !matches!(p, Piece::Text("")));
        Ok(pieces)
    }

    /// Rejects unknown placeholders and broken blocks up front, so a bad user template fails at
    /// load time rather than at the first render.
    fn validate(&self) -> Result<(), TemplateError> {
        self.expand(true, |_| String::new()).map(drop)
    }
}

enum Piece<'t> {
    Text(&'t str),
    Var(Placeholder),
}

/// The menu templates in use: built-in, or overridden from a directory.
#[derive(Clone, Debug)]
pub struct Templates {
    isolinux: Template,
    grub: Template,
}

impl Templates {
    pub fn builtin() -> Self {
        Templates {
            isolinux: Template::builtin("isolinux.cfg", BUILTIN_ISOLINUX),
            grub: Template::builtin("grub.cfg", BUILTIN_GRUB),
        }
    }

    /// Built-in templates, with `isolinux.cfg` and `grub.cfg` replaced by those present in `dir`.
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let mut templates = Templates::builtin();
        for (name, slot) in [
            ("isolinux.cfg", &mut templates.isolinux),
            ("grub.cfg", &mut templates.grub),
        ] {
            let path = dir.join(name);
            let io_err = |source| TemplateError::Io {
                path: path.display().to_string(),
                source,
            };
            match crate::regular_file::read_to_string(&path) {
                Ok(text) => {
                    let template = Template {
                        origin: path.display().to_string(),
                        text,
                    };
                    template.validate()?;
                    *slot = template;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        Ok(templates)
    }

    pub fn isolinux_cfg(&self, m: &MenuInput) -> Result<String, TemplateError> {
        let label = m.default_entry.label();
        let text = render(&self.isolinux, m, label)?;
        // A template of one's own may lack the entry DEFAULT names: isolinux would then boot
        // nothing after the timeout.
        let is_entry = |l: &str| {
            let mut w = l.split_whitespace();
            w.next().is_some_and(|k| k.eq_ignore_ascii_case("LABEL")) && w.next() == Some(label)
        };
        if !text.lines().any(is_entry) {
            return Err(no_default(&self.isolinux, format!("LABEL {label}")));
        }
        Ok(text)
    }

    pub fn grub_cfg(&self, m: &MenuInput) -> Result<String, TemplateError> {
        let position = m.default_entry.position();
        let text = render(&self.grub, m, &position.to_string())?;
        if top_level_entries(&text) <= position {
            return Err(no_default(
                &self.grub,
                format!("menu entry number {position}"),
            ));
        }
        Ok(text)
    }

    /// `boot/grub/loopback.cfg`, for GRUBs that loop-mount the ISO file (e.g. Ventoy's GRUB2
    /// mode): it just defers to the real menu.
    pub fn loopback_cfg(&self) -> String {
        "source /EFI/BOOT/grub.cfg\n".to_string()
    }
}

fn render(t: &Template, m: &MenuInput, default: &str) -> Result<String, TemplateError> {
    if m.minimal && m.default_entry == DefaultEntry::Autoinstall {
        return Err(TemplateError::NoAutoinstallEntry);
    }
    let host = if m.minimal { "" } else { m.host };
    for (what, value) in [
        ("host", host),
        ("volume ID", m.volume_id),
        ("release", m.release),
        ("kernel path", m.kernel),
        ("initrd path", m.initrd),
        ("init path", m.init),
    ] {
        check_word(what, value)?;
    }
    for param in m.kernel_params {
        if param.chars().any(char::is_control) {
            return Err(bad_value("kernel parameter", param, "control character"));
        }
        if param.chars().any(|c| GRUB_SPECIAL.contains(c)) {
            return Err(bad_value(
                "kernel parameter",
                param,
                "one of $ ; # \" ' \\ { } | & < > ` (GRUB would not pass it on as written)",
            ));
        }
    }
    let title = if m.minimal {
        format!("NixOS {} installer", m.release)
    } else {
        format!("NixOS {} installer for {}", m.release, m.host)
    };
    let cmdline = kernel_cmdline(m, false);
    let cmdline_autoinstall = kernel_cmdline(m, true);
    // Both loaders put `BOOT_IMAGE=<kernel> ` first; the kernel silently cuts what passes its
    // limit, which would drop `isofs.host=` and `autoinstall` from the end.
    // (Only the built-in menus' lines are measured: what a template of one's own adds is its own.)
    let line = if m.minimal {
        &cmdline
    } else {
        &cmdline_autoinstall
    };
    let longest = "BOOT_IMAGE= ".len() + m.kernel.len() + line.len();
    if longest > MAX_CMDLINE {
        return Err(TemplateError::CommandLineTooLong(longest));
    }
    t.expand(!m.minimal, |p| {
        match p {
            Placeholder::Host => host,
            Placeholder::VolumeId => m.volume_id,
            Placeholder::Release => m.release,
            Placeholder::Title => &title,
            Placeholder::Kernel => m.kernel,
            Placeholder::Initrd => m.initrd,
            Placeholder::Cmdline => &cmdline,
            Placeholder::CmdlineAutoinstall => &cmdline_autoinstall,
            Placeholder::Default => default,
            Placeholder::AutoinstallBegin | Placeholder::AutoinstallEnd => "",
        }
        .to_string()
    })
}

/// How many entries GRUB's top-level menu has: `menuentry` and `submenu` lines outside any `{ }`
/// block (a submenu's own entries do not count; braces in quoted titles are not expected).
fn top_level_entries(cfg: &str) -> usize {
    let mut depth = 0usize;
    let mut entries = 0;
    for line in cfg.lines() {
        let first = line.split_whitespace().next();
        if depth == 0 && matches!(first, Some("menuentry" | "submenu")) {
            entries += 1;
        }
        for c in line.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    entries
}

fn no_default(t: &Template, entry: String) -> TemplateError {
    TemplateError::NoDefaultEntry {
        file: t.origin.clone(),
        entry,
    }
}

fn bad_value(what: &'static str, value: &str, why: &'static str) -> TemplateError {
    TemplateError::BadValue {
        what,
        value: value.to_string(),
        why,
    }
}

/// What GRUB's script lexer would expand, split, quote or cut at, where isolinux passes it on as
/// it is: the two boot paths would start different command lines.
const GRUB_SPECIAL: &str = "$;#\"'\\{}|&<>`";

fn check_word(what: &'static str, value: &str) -> Result<(), TemplateError> {
    if value.chars().any(char::is_control) {
        return Err(bad_value(what, value, "control character"));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || GRUB_SPECIAL.contains(c))
    {
        return Err(bad_value(
            what,
            value,
            "whitespace or one of $ ; # \" ' \\ { } | & < > ` (GRUB would not pass it on as written)",
        ));
    }
    Ok(())
}

/// `init=<init> root=LABEL=<volume ID> boot.shell_on_fail <kernel params…> isofs.host=<host>`,
/// plus ` autoinstall` for the autoinstall entry. Minimal images carry no `isofs.host=`.
pub fn kernel_cmdline(m: &MenuInput, autoinstall: bool) -> String {
    let mut words = vec![
        format!("init={}", m.init),
        format!("root=LABEL={}", m.volume_id),
        "boot.shell_on_fail".to_string(),
    ];
    words.extend(m.kernel_params.iter().cloned());
    if !m.minimal {
        words.push(format!("isofs.host={}", m.host));
    }
    if autoinstall {
        words.push("autoinstall".to_string());
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `set default=N` counts top-level entries: a submenu is one, its entries are not.
    #[test]
    fn counts_top_level_menu_entries() {
        let cfg = "if [ ${x} ] ; then\n  set y=1\nfi\nmenuentry\t\"A\" {\n  linux /k ${y}\n}\n\
                   submenu \"More\" {\n  menuentry \"B\" {\n    linux /k\n  }\n}\n";
        assert_eq!(top_level_entries(cfg), 2);
        assert_eq!(top_level_entries(BUILTIN_GRUB), 2);
    }

    fn menu(params: &[String]) -> MenuInput<'_> {
        MenuInput {
            host: "shinji",
            volume_id: "nixos-shinji-25.11-x86_64",
            release: "25.11",
            kernel: "/boot/k-linux/bzImage",
            initrd: "/boot/i-initrd/initrd",
            init: "/nix/store/t-nixos-system/init",
            kernel_params: params,
            default_entry: DefaultEntry::Install,
            minimal: false,
        }
    }

    #[test]
    fn cmdline_order() {
        let params = ["loglevel=4".to_string()];
        let m = menu(&params);
        assert_eq!(
            kernel_cmdline(&m, true),
            "init=/nix/store/t-nixos-system/init root=LABEL=nixos-shinji-25.11-x86_64 \
             boot.shell_on_fail loglevel=4 isofs.host=shinji autoinstall"
        );
    }

    #[test]
    fn literal_at_signs_pass_through() {
        let t = Template {
            origin: "t".into(),
            text: "a@b @ c@@ user@HOST x@lower@ @HOST@\n".into(),
        };
        let out = t.expand(true, |_| "H".into()).unwrap();
        assert_eq!(out, "a@b @ c@@ user@HOST x@lower@ H\n");
    }

    #[test]
    fn blocks_must_balance() {
        for text in [
            "@AUTOINSTALL_BEGIN@\n",
            "@AUTOINSTALL_END@\n",
            "x @AUTOINSTALL_BEGIN@\n@AUTOINSTALL_END@\n",
        ] {
            let t = Template {
                origin: "t".into(),
                text: text.into(),
            };
            assert!(
                matches!(t.validate(), Err(TemplateError::Block { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn default_entry_parses() {
        assert_eq!("install".parse(), Ok(DefaultEntry::Install));
        assert_eq!("autoinstall".parse(), Ok(DefaultEntry::Autoinstall));
        assert!("Install".parse::<DefaultEntry>().is_err());
    }

    #[test]
    fn newline_in_param_is_rejected() {
        let params = ["a\nDEFAULT evil".to_string()];
        let m = menu(&params);
        assert!(matches!(
            Templates::builtin().grub_cfg(&m),
            Err(TemplateError::BadValue { .. })
        ));
    }
}
