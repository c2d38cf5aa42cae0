//! Shell completions and the man page, generated from the clap definitions so they never drift
//! from the real flags.

use crate::cli::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::{self, Write};

/// The completion script for `shell`, as `isofs completions SHELL` prints it.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "isofs", out);
}

/// The roff man page isofs(1), as `isofs man` prints it: one page for the whole tool, each
/// subcommand with its synopsis, description, options and examples under COMMANDS (clap_mangen
/// alone would refer to isofs-build(1) and friends, which do not exist), and the top-level
/// examples, environment and exit status as sections of their own, laid out as written.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = format!("isofs {}", sub.get_name());
        let page = clap_mangen::Man::new(sub.clone().bin_name(&name));
        let mut body = Vec::new();
        page.render_synopsis_section(&mut body)?;
        page.render_description_section(&mut body)?;
        page.render_options_section(&mut body)?;
        writeln!(out, ".SS \"{name}\"")?;
        // The subcommand's own section headings would end COMMANDS: its parts become paragraphs.
        for line in String::from_utf8_lossy(&body).lines() {
            if line.starts_with(".SH ") {
                writeln!(out, ".PP")?;
            } else {
                writeln!(out, "{line}")?;
            }
        }
        if let Some(after) = sub.get_after_help() {
            verbatim(out, &after.to_string())?;
        }
    }
    // "HEADING:" lines start sections; what follows keeps its lines and indentation.
    let extra = cmd
        .get_after_long_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    let mut block = String::new();
    for line in extra.lines() {
        match line.strip_suffix(':') {
            Some(heading) if !line.starts_with(' ') => {
                verbatim(out, &block)?;
                block.clear();
                writeln!(out, ".SH {heading}")?;
            }
            _ => {
                block.push_str(line);
                block.push('\n');
            }
        }
    }
    verbatim(out, &block)
}

/// `text` as a paragraph: indented text (examples) as a no-fill block that keeps its line breaks
/// and alignment, prose filled as usual.
fn verbatim(out: &mut dyn Write, text: &str) -> io::Result<()> {
    let text = text.trim_matches('\n');
    if text.is_empty() {
        return Ok(());
    }
    let indented = text.lines().any(|l| l.starts_with(' '));
    writeln!(out, ".PP")?;
    if indented {
        writeln!(out, ".nf")?;
    }
    for line in text.lines() {
        let line = line.replace('\\', "\\e").replace('-', "\\-");
        // A line starting with a control character would be read as a request.
        let guard = if line.starts_with(['.', '\'']) {
            "\\&"
        } else {
            ""
        };
        writeln!(out, "{guard}{line}")?;
    }
    if indented {
        writeln!(out, ".fi")?;
    }
    Ok(())
}
