//! `isofs check`: the static prerequisites for a host to be installable from its ISO, read from the
//! flake's Nix files with rnix (no evaluation). What the syntax cannot settle is a warning, never a guess.

use crate::inputs::flake::validate_host;
use rnix::ast::{self, AstToken, BinOpKind, HasEntry, InterpolPart};
use rowan::ast::AstNode;
use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        })
    }
}

/// One verdict; `file` is relative to the flake directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub host: String,
    pub rule: &'static str,
    pub level: Level,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

pub const RULE_FILES: &str = "files";
pub const RULE_DISKO: &str = "disko";
pub const RULE_FILESYSTEMS: &str = "filesystems";
pub const RULE_INITRD: &str = "initrd-modules";
pub const RULE_VOLUME_ID: &str = "volume-id";

/// Storage drivers that make the target disk appear in stage 1: controllers and the block layers above
/// them. Buses (`xhci_pci`, `virtio_pci`) and `sr_mod` (CD-ROMs never hold the installed system) are not.
const BLOCK_MODULES: &[&str] = &[
    "ahci",
    "ata_piix",
    "nvme",
    "sd_mod",
    "virtio_blk",
    "virtio_scsi",
    "usb_storage",
    "uas",
    "mmc_block",
    "xen_blkfront",
    "hv_storvsc",
    "vmw_pvscsi",
    "mpt3sas",
    "megaraid_sas",
    "hpsa",
    "aacraid",
];

fn is_block_module(name: &str) -> bool {
    BLOCK_MODULES.contains(&name) || name.starts_with("sata_") || name.starts_with("pata_")
}

/// The ISO's volume ID; ISO 9660 allows 32 characters.
fn volume_id(host: &str, release: &str) -> String {
    format!("nixos-{host}-{release}-x86_64")
}

/// A spot in a file: the thing found there, as written.
struct Hit {
    file: PathBuf,
    line: usize,
    text: String,
}

/// A parsed Nix file and the parts of it that configure the host: the whole file for a module, the
/// host's `modules = [ ... ]` lists for flake.nix.
struct Source {
    rel: PathBuf,
    text: String,
    scopes: Vec<rnix::SyntaxNode>,
}

impl Source {
    fn hit(&self, node: &rnix::SyntaxNode) -> Hit {
        let offset: usize = node.text_range().start().into();
        Hit {
            file: self.rel.clone(),
            line: self.text[..offset].matches('\n').count() + 1,
            text: node.to_string(),
        }
    }

    /// Every attribute binding with the option path it sets; a `let` binding sets no option.
    fn bindings(&self) -> impl Iterator<Item = (Vec<String>, ast::AttrpathValue)> + '_ {
        self.scopes.iter().flat_map(|s| {
            s.descendants()
                .filter_map(ast::AttrpathValue::cast)
                .filter(|apv| {
                    !apv.syntax()
                        .parent()
                        .is_some_and(|p| ast::LetIn::can_cast(p.kind()))
                })
                .map(|apv| (option_path(&apv), apv))
        })
    }

    /// The first `inherit` of `name` (`{ inherit name; }`): a value the checker cannot see.
    fn inherit_of(&self, name: &str) -> Option<Hit> {
        self.scopes
            .iter()
            .flat_map(|s| s.descendants().filter_map(ast::Inherit::cast))
            .find(|i| i.attrs().any(|a| attr_name(&a) == name))
            .map(|i| self.hit(i.syntax()))
    }
}

fn attr_name(attr: &ast::Attr) -> String {
    if let ast::Attr::Str(s) = attr {
        if let [InterpolPart::Literal(l)] = s.normalized_parts().as_slice() {
            return l.clone();
        }
    }
    attr.syntax().to_string()
}

/// The option a binding sets: its attribute path prefixed by those of the attribute sets it is nested
/// in, without a leading `config`.
fn option_path(apv: &ast::AttrpathValue) -> Vec<String> {
    let mut path = Vec::new();
    let mut cur = Some(apv.clone());
    while let Some(a) = cur {
        let names: Vec<String> = a
            .attrpath()
            .iter()
            .flat_map(|p| p.attrs())
            .map(|x| attr_name(&x))
            .collect();
        path.splice(0..0, names);
        // `x = with lib; { … }`, `x = mkDefault { … }`, `x = ({ … })`, `x = let … in { … }`:
        // the set still configures `x`.
        cur = a
            .syntax()
            .parent()
            .filter(|p| ast::AttrSet::can_cast(p.kind()))
            .and_then(|set| {
                set.ancestors().skip(1).find(|n| {
                    !(ast::With::can_cast(n.kind())
                        || ast::Paren::can_cast(n.kind())
                        || ast::Apply::can_cast(n.kind())
                        || ast::LetIn::can_cast(n.kind()))
                })
            })
            .and_then(ast::AttrpathValue::cast);
    }
    if path.first().is_some_and(|p| p == "config") {
        path.remove(0);
    }
    path
}

/// `base/path` for a relative path literal, inside the flake; `${x}` reads as `host` when given.
fn resolve(base: &Path, path: &ast::Path, host: Option<&str>) -> Option<PathBuf> {
    let mut text = String::new();
    for part in path.parts() {
        match part {
            InterpolPart::Literal(l) => text.push_str(l.syntax().text()),
            InterpolPart::Interpolation(i) => match (i.expr(), host) {
                (Some(ast::Expr::Ident(_)), Some(h)) => text.push_str(h),
                _ => return None,
            },
        }
    }
    if !(text.starts_with("./") || text.starts_with("../")) {
        return None;
    }
    let mut out = base.to_path_buf();
    for c in Path::new(&text).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn disko_module(sel: &ast::Select, disko_bound: bool) -> bool {
    let Some(ast::Expr::Ident(head)) = sel.expr() else {
        return false;
    };
    let mut names = vec![head.to_string()];
    names.extend(
        sel.attrpath()
            .iter()
            .flat_map(|p| p.attrs())
            .map(|a| attr_name(&a)),
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    match names.as_slice() {
        ["inputs", "disko", "nixosModules", "disko" | "default"] => true,
        ["disko", "nixosModules", "disko" | "default"] => disko_bound,
        _ => false,
    }
}

/// The strings of a list literal, `++` of them, or `mkDefault`/`mkForce` of them.
fn literal_list(e: &ast::Expr) -> Option<Vec<String>> {
    match e {
        ast::Expr::List(l) => l
            .items()
            .map(|i| match i {
                ast::Expr::Str(s) => match s.normalized_parts().as_slice() {
                    [InterpolPart::Literal(l)] => Some(l.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        ast::Expr::BinOp(b) if b.operator() == Some(BinOpKind::Concat) => {
            let mut items = literal_list(&b.lhs()?)?;
            items.extend(literal_list(&b.rhs()?)?);
            Some(items)
        }
        ast::Expr::Paren(p) => literal_list(&p.expr()?),
        ast::Expr::Apply(a) => {
            let f = a.lambda()?.syntax().to_string();
            let f = f.strip_prefix("lib.").unwrap_or(&f);
            matches!(f, "mkDefault" | "mkForce")
                .then(|| literal_list(&a.argument()?))
                .flatten()
        }
        _ => None,
    }
}

/// The host's files, read by following imports from flake.nix and from everything under `hosts/<host>`.
struct Scan<'a> {
    dir: &'a Path,
    host: &'a str,
    sources: Vec<Source>,
    seen: BTreeSet<PathBuf>,
    /// Files some followed import names; the rest of hosts/<host> is read on the chance that it
    /// is imported in a way the checker cannot follow.
    followed: BTreeSet<PathBuf>,
    disko: Vec<Hit>,
    /// Path imports that cannot be followed without evaluating.
    opaque: Vec<Hit>,
    /// The host's `modules = [` in flake.nix, where a missing disko import belongs.
    module_list: Option<Hit>,
    /// The host's entry in `isoHosts`, where its name is chosen.
    listed: Option<Hit>,
    /// The other hosts in `isoHosts`: a `./hosts/${name}` that exists for them but not for this
    /// host is a missing directory, not a guess gone wrong.
    peers: Vec<String>,
    broken: Vec<Finding>,
}

impl Scan<'_> {
    fn host_dir(&self) -> PathBuf {
        Path::new("hosts").join(self.host)
    }

    fn parse(&mut self, rel: &Path) -> Option<(String, ast::Root)> {
        // A file no followed import names may be one Nix never reads (a draft, an editor's copy).
        let followed = self.followed.contains(rel);
        let fail = |message: String| Finding {
            host: self.host.to_string(),
            rule: RULE_FILES,
            level: if followed { Level::Fail } else { Level::Warn },
            file: rel.to_path_buf(),
            line: None,
            message: if followed {
                message
            } else {
                format!("{message} (no import the checker followed names it)")
            },
        };
        let text = match crate::regular_file::read_to_string(&self.dir.join(rel)) {
            Ok(t) => t,
            Err(e) => {
                self.broken.push(fail(format!("cannot read: {e}")));
                return None;
            }
        };
        let parse = rnix::Root::parse(&text);
        if let Some(e) = parse.errors().first() {
            self.broken.push(fail(format!("cannot parse: {e}")));
            return None;
        }
        Some((text, parse.tree()))
    }

    /// Notes disko modules among `items` and where the relative paths among them lead.
    fn imports(
        &mut self,
        src: &Source,
        items: &[ast::Expr],
        disko_bound: bool,
        host: Option<&str>,
    ) -> Vec<PathBuf> {
        let base = src.rel.parent().unwrap_or(Path::new(""));
        let mut next = Vec::new();
        for item in items {
            match item {
                ast::Expr::Select(sel) if disko_module(sel, disko_bound) => {
                    self.disko.push(src.hit(sel.syntax()))
                }
                // A disko module under a name this file does not visibly bind (`with inputs;`),
                // or a variable holding modules: only evaluation could say what they are.
                ast::Expr::Select(sel) if sel.syntax().to_string().contains("disko") => {
                    self.opaque.push(src.hit(sel.syntax()))
                }
                ast::Expr::Ident(_) | ast::Expr::LetIn(_) | ast::Expr::Apply(_) => {
                    self.opaque.push(src.hit(item.syntax()))
                }
                ast::Expr::Path(p) => {
                    // `${x}` read as the host name is a guess: if it leads nowhere, it was wrong.
                    let guessed = p
                        .parts()
                        .any(|x| matches!(x, InterpolPart::Interpolation(_)));
                    match resolve(base, p, host) {
                        Some(rel) if self.dir.join(&rel).is_dir() => {
                            next.push(rel.join("default.nix"))
                        }
                        Some(rel) if !guessed || self.dir.join(&rel).exists() => next.push(rel),
                        // Only a guessed `${x}` gets here, so `host` was given.
                        Some(rel) => match self.peer_with(base, p) {
                            Some(peer) => {
                                let hit = src.hit(p.syntax());
                                // A warning, not a failure: the host may be configured by a
                                // list of its own that this one only appears to be.
                                self.broken.push(Finding {
                                    host: self.host.to_string(),
                                    rule: RULE_FILES,
                                    level: Level::Warn,
                                    file: hit.file,
                                    line: Some(hit.line),
                                    message: format!(
                                        "imports `{}`: {} does not exist (it does for {peer}); \
                                         missing, unless this host is configured elsewhere",
                                        hit.text,
                                        rel.display()
                                    ),
                                });
                            }
                            None => self.opaque.push(src.hit(p.syntax())),
                        },
                        None => self.opaque.push(src.hit(p.syntax())),
                    }
                }
                _ => {}
            }
        }
        next
    }

    /// Another host for which the interpolated import `p` leads to something that exists.
    fn peer_with(&self, base: &Path, p: &ast::Path) -> Option<String> {
        self.peers
            .iter()
            .find(|peer| {
                resolve(base, p, Some(peer)).is_some_and(|rel| self.dir.join(rel).exists())
            })
            .cloned()
    }

    fn flake(&mut self) -> Vec<PathBuf> {
        let rel = PathBuf::from("flake.nix");
        let Some((text, root)) = self.parse(&rel) else {
            return Vec::new();
        };
        let host_dir = self.host_dir();
        let names_host = |apv: &ast::AttrpathValue| {
            apv.syntax()
                .ancestors()
                .filter_map(ast::AttrpathValue::cast)
                .any(|a| {
                    a.attrpath()
                        .iter()
                        .flat_map(|p| p.attrs())
                        .any(|x| attr_name(&x) == self.host)
                })
        };
        let in_host_dir = |item: &ast::Expr| match item {
            ast::Expr::Path(p) => {
                resolve(Path::new(""), p, Some(self.host)).is_some_and(|r| r.starts_with(&host_dir))
            }
            _ => false,
        };
        // The host's `modules = [ ... ]`: under an attribute named after it, or naming hosts/<host>.
        let lists: Vec<(ast::AttrpathValue, Vec<ast::Expr>)> = root
            .syntax()
            .descendants()
            .filter_map(ast::AttrpathValue::cast)
            .filter(|apv| apv.attrpath().is_some_and(|p| p.to_string() == "modules"))
            .map(|apv| {
                let items = apv.value().map(|v| imported(&v)).unwrap_or_default();
                (apv, items)
            })
            .filter(|(apv, items)| names_host(apv) || items.iter().any(in_host_dir))
            .collect();
        let src = Source {
            rel,
            text,
            scopes: lists.iter().map(|(apv, _)| apv.syntax().clone()).collect(),
        };
        self.module_list = lists.first().map(|(apv, _)| src.hit(apv.syntax()));
        self.listed = root
            .syntax()
            .descendants()
            .filter_map(ast::AttrpathValue::cast)
            .filter(|apv| apv.attrpath().is_some_and(|p| p.to_string() == "isoHosts"))
            .flat_map(|apv| apv.syntax().descendants().filter_map(ast::Str::cast))
            .find(|s| {
                matches!(s.normalized_parts().as_slice(), [InterpolPart::Literal(l)] if l == self.host)
            })
            .map(|s| src.hit(s.syntax()));
        let disko_bound = binds_disko(&root);
        let host = self.host;
        let next = lists
            .iter()
            .flat_map(|(_, items)| self.imports(&src, items, disko_bound, Some(host)))
            .collect();
        self.sources.push(src);
        next
    }

    fn module(&mut self, rel: PathBuf) -> Vec<PathBuf> {
        let Some((text, root)) = self.parse(&rel) else {
            return Vec::new();
        };
        let src = Source {
            rel,
            text,
            scopes: vec![root.syntax().clone()],
        };
        let items: Vec<ast::Expr> = src
            .bindings()
            .filter(|(path, _)| path == &["imports"])
            .filter_map(|(_, apv)| apv.value())
            .flat_map(|v| imported(&v))
            .collect();
        let next = self.imports(&src, &items, binds_disko(&root), None);
        self.sources.push(src);
        next
    }

    /// Depth first, in the order files are named: flake.nix's imports, then the rest of hosts/<host>.
    fn run(&mut self) {
        let mut stack = self.flake();
        self.followed.extend(stack.iter().cloned());
        stack.extend(nix_files(self.dir, &self.host_dir()));
        stack.reverse();
        while let Some(rel) = stack.pop() {
            if self.seen.insert(rel.clone()) {
                let next = self.module(rel);
                self.followed.extend(next.iter().cloned());
                stack.extend(next.into_iter().rev());
            }
        }
    }
}

/// The modules an import list names: its items through `++`, parentheses and inline modules' own
/// `imports`. Paths elsewhere (`age.secrets.x.file = ./x.age;`) are data, not modules.
fn imported(e: &ast::Expr) -> Vec<ast::Expr> {
    match e {
        ast::Expr::List(l) => l.items().flat_map(|i| imported(&i)).collect(),
        ast::Expr::BinOp(b) if b.operator() == Some(BinOpKind::Concat) => [b.lhs(), b.rhs()]
            .iter()
            .flatten()
            .flat_map(imported)
            .collect(),
        ast::Expr::Paren(p) => p.expr().iter().flat_map(imported).collect(),
        ast::Expr::With(w) => w.body().iter().flat_map(imported).collect(),
        ast::Expr::Lambda(l) => l.body().iter().flat_map(imported).collect(),
        ast::Expr::AttrSet(set) => set
            .attrpath_values()
            .filter(|apv| apv.attrpath().is_some_and(|p| p.to_string() == "imports"))
            .filter_map(|apv| apv.value())
            .flat_map(|v| imported(&v))
            .collect(),
        other => vec![other.clone()],
    }
}

/// Whether a function in this file takes `disko` (the flake's inputs, or a module given it), or
/// the file inherits it (`let inherit (inputs) disko; in …`).
fn binds_disko(root: &ast::Root) -> bool {
    let nodes = || root.syntax().descendants();
    nodes()
        .filter_map(ast::PatEntry::cast)
        .any(|e| e.ident().is_some_and(|i| i.to_string() == "disko"))
        || nodes()
            .filter_map(ast::Inherit::cast)
            .any(|i| i.attrs().any(|a| attr_name(&a) == "disko"))
}

/// `*.nix` below `rel`, in name order so findings are deterministic. Symlinked directories are not
/// entered: they could loop.
fn nix_files(dir: &Path, rel: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(rel)) else {
        return Vec::new();
    };
    let mut entries: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name(), e.file_type().is_ok_and(|t| t.is_dir())))
        .collect();
    entries.sort();
    let mut out = Vec::new();
    for (name, is_dir) in entries {
        let r = rel.join(name);
        if is_dir {
            out.extend(nix_files(dir, &r));
        } else if r.extension().is_some_and(|e| e == "nix") {
            out.push(r);
        }
    }
    out
}

/// A verdict before it is told which host and rule it is about.
struct Verdict {
    level: Level,
    file: PathBuf,
    line: Option<usize>,
    message: String,
}

impl Verdict {
    fn at(level: Level, hit: &Hit, message: String) -> Self {
        let (file, line) = (hit.file.clone(), Some(hit.line));
        Verdict {
            level,
            file,
            line,
            message,
        }
    }

    fn in_file(level: Level, file: PathBuf, message: &str) -> Self {
        let message = message.to_string();
        Verdict {
            level,
            file,
            line: None,
            message,
        }
    }
}

fn cannot_tell(h: &Hit) -> Verdict {
    Verdict::at(
        Level::Warn,
        h,
        format!("cannot tell statically: imports `{}`", h.text),
    )
}

impl Scan<'_> {
    fn disko_rule(&self) -> Verdict {
        if let Some(h) = self.disko.first() {
            return Verdict::at(Level::Pass, h, format!("imports {}", h.text));
        }
        if let Some(h) = self.opaque.first() {
            return cannot_tell(h);
        }
        let m = "no module imports inputs.disko.nixosModules.disko";
        match &self.module_list {
            Some(h) => Verdict::at(Level::Fail, h, m.into()),
            None => Verdict::in_file(Level::Fail, self.host_dir(), m),
        }
    }

    fn filesystems_rule(&self) -> Verdict {
        let hardware: Vec<&Source> = self
            .sources
            .iter()
            .filter(|s| {
                s.rel.starts_with(self.host_dir()) && s.rel.ends_with("hardware-configuration.nix")
            })
            .collect();
        for s in &hardware {
            if let Some((_, apv)) = s
                .bindings()
                .find(|(p, _)| p.first().is_some_and(|f| f == "fileSystems"))
            {
                let m = "live fileSystems definition; disko must be the only one to define them";
                return Verdict::at(Level::Fail, &s.hit(apv.syntax()), m.into());
            }
        }
        match hardware.first() {
            Some(s) => Verdict::in_file(Level::Pass, s.rel.clone(), "no live fileSystems"),
            None => Verdict::in_file(
                Level::Pass,
                self.host_dir(),
                "no hardware-configuration.nix",
            ),
        }
    }

    fn initrd_rule(&self) -> Verdict {
        let mut literal = None;
        let mut computed = None;
        for s in &self.sources {
            for (path, apv) in s.bindings() {
                if path != ["boot", "initrd", "availableKernelModules"] {
                    continue;
                }
                let hit = s.hit(apv.syntax());
                match apv.value().as_ref().and_then(literal_list) {
                    Some(mods) => {
                        if let Some(m) = mods.iter().find(|m| is_block_module(m)) {
                            let msg = format!("boot.initrd.availableKernelModules has {m}");
                            return Verdict::at(Level::Pass, &hit, msg);
                        }
                        literal.get_or_insert((hit, mods));
                    }
                    None => {
                        computed.get_or_insert(hit);
                    }
                }
            }
        }
        if let Some(h) = &computed {
            let m =
                "cannot tell statically: boot.initrd.availableKernelModules is not a literal list";
            return Verdict::at(Level::Warn, h, m.into());
        }
        if let Some(h) = self.opaque.first() {
            return cannot_tell(h);
        }
        if literal.is_none() {
            if let Some(h) = self
                .sources
                .iter()
                .find_map(|s| s.inherit_of("availableKernelModules"))
            {
                let m = format!("cannot tell statically: `{}`", h.text);
                return Verdict::at(Level::Warn, &h, m);
            }
        }
        match literal {
            Some((h, mods)) => {
                let m = format!(
                    "no block-device driver in boot.initrd.availableKernelModules {mods:?}"
                );
                Verdict::at(Level::Fail, &h, m)
            }
            None => Verdict::in_file(
                Level::Fail,
                self.host_dir(),
                "no boot.initrd.availableKernelModules",
            ),
        }
    }

    fn volume_id_rule(&self, release: &str) -> Verdict {
        let id = volume_id(self.host, release);
        let level = if id.len() <= 32 {
            Level::Pass
        } else {
            Level::Fail
        };
        let m = format!("volume ID {id} has {} characters (at most 32)", id.len());
        match &self.listed {
            Some(h) => Verdict::at(level, h, m),
            None => Verdict::in_file(level, "flake.nix".into(), &m),
        }
    }
}

/// Checks `host` of the flake in `flake_dir`: one finding per rule, after one per unreadable file.
pub fn check_host(flake_dir: &Path, host: &str, release: &str) -> Vec<Finding> {
    let finding = |rule, v: Verdict| Finding {
        host: host.to_string(),
        rule,
        level: v.level,
        file: v.file,
        line: v.line,
        message: v.message,
    };
    // The name becomes a path below: nothing else is safe to look at.
    if let Err(m) = validate_host(host) {
        return vec![finding(
            RULE_VOLUME_ID,
            Verdict::in_file(Level::Fail, "flake.nix".into(), &m),
        )];
    }
    let mut scan = Scan {
        dir: flake_dir,
        host,
        sources: Vec::new(),
        seen: BTreeSet::new(),
        followed: BTreeSet::new(),
        disko: Vec::new(),
        opaque: Vec::new(),
        module_list: None,
        listed: None,
        peers: crate::inputs::flake::hosts(flake_dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h != host)
            .collect(),
        broken: Vec::new(),
    };
    scan.run();
    let mut out = std::mem::take(&mut scan.broken);
    out.push(finding(RULE_DISKO, scan.disko_rule()));
    out.push(finding(RULE_FILESYSTEMS, scan.filesystems_rule()));
    out.push(finding(RULE_INITRD, scan.initrd_rule()));
    out.push(finding(RULE_VOLUME_ID, scan.volume_id_rule(release)));
    out
}

/// One line per finding: `PASS shinji disko: hosts/shinji/disk.nix:3: imports …`.
pub fn render(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let line = f.line.map(|l| format!(":{l}")).unwrap_or_default();
        out += &format!(
            "{} {} {}: {}{line}: {}\n",
            f.level,
            f.host,
            f.rule,
            f.file.display(),
            f.message
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(src: &str) -> ast::Expr {
        rnix::Root::parse(src).tree().expr().unwrap()
    }

    fn first<N: AstNode<Language = rnix::NixLanguage>>(src: &str) -> N {
        let root = rnix::Root::parse(src).tree();
        let node = root.syntax().descendants().find_map(N::cast);
        node.unwrap()
    }

    #[test]
    fn option_paths_join_nested_sets() {
        let src = "{ config = { boot.initrd = { availableKernelModules = [ ]; }; }; }";
        let apv = rnix::Root::parse(src)
            .tree()
            .syntax()
            .descendants()
            .filter_map(ast::AttrpathValue::cast)
            .last()
            .unwrap();
        assert_eq!(
            option_path(&apv),
            ["boot", "initrd", "availableKernelModules"]
        );
        let apv: ast::AttrpathValue = first(r#"{ fileSystems."/".device = "x"; }"#);
        assert_eq!(option_path(&apv), ["fileSystems", "/", "device"]);
    }

    #[test]
    fn literal_lists_and_what_is_not() {
        let list = |s: &str| literal_list(&expr(s));
        assert_eq!(list(r#"[ "a" ] ++ ([ "b" ])"#).unwrap(), ["a", "b"]);
        assert_eq!(list(r#"lib.mkForce [ "a" ]"#).unwrap(), ["a"]);
        assert_eq!(list(r#"mkDefault ([ "a" ] ++ [ ])"#).unwrap(), ["a"]);
        for computed in [
            r#"lib.mkIf c [ "a" ]"#,
            r#"[ "a${x}" ]"#,
            r#"[ x ]"#,
            r#"map f [ "a" ]"#,
            r#"[ "a" ] ++ extra"#,
        ] {
            assert_eq!(list(computed), None, "{computed}");
        }
    }

    #[test]
    fn resolves_relative_paths_inside_the_flake() {
        let path = |s: &str, host| resolve(Path::new("hosts/a"), &first(s), host);
        assert_eq!(path("./disk.nix", None), Some("hosts/a/disk.nix".into()));
        assert_eq!(path("../../common.nix", None), Some("common.nix".into()));
        assert_eq!(path("./x/${name}", Some("b")), Some("hosts/a/x/b".into()));
        assert_eq!(path("./x/${name}", None), None);
        assert_eq!(path("./x/${a.b}", Some("b")), None);
        assert_eq!(path("../../../escape.nix", None), None);
        assert_eq!(path("/etc/nixos/x.nix", None), None);
    }

    #[test]
    fn recognises_disko_modules() {
        let is = |s: &str, bound| disko_module(&first(s), bound);
        assert!(is("inputs.disko.nixosModules.disko", false));
        assert!(is("inputs.disko.nixosModules.default", false));
        assert!(is("disko.nixosModules.disko", true));
        assert!(!is("disko.nixosModules.disko", false));
        assert!(!is("inputs.disko.nixosModules.other", false));
        assert!(!is("inputs.other.nixosModules.disko", false));
    }

    #[test]
    fn imports_are_list_items_not_data() {
        let items = imported(&expr(
            "[ ./a.nix { imports = [ ./b.nix ]; x.file = ./secret.age; } ] ++ [ (./c.nix) ]",
        ));
        let items: Vec<String> = items.iter().map(|i| i.to_string()).collect();
        assert_eq!(items, ["./a.nix", "./b.nix", "./c.nix"]);
    }
}
