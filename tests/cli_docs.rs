//! Completions and the man page come from the clap definitions.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn completions_name_the_subcommands() {
    let bash = stdout(isofs().args(["completions", "bash"]));
    // The subcommands, a flag, and the default entry's two values (not file names).
    for sub in [
        "build",
        "mount",
        "ventoy",
        "--compress-image",
        "install autoinstall",
    ] {
        assert!(bash.contains(sub), "bash completions lack {sub}");
    }
    let zsh = stdout(isofs().args(["completions", "zsh"]));
    assert!(zsh.starts_with("#compdef isofs"), "{zsh}");
    let fish = stdout(isofs().args(["completions", "fish"]));
    assert!(fish.contains("complete -c isofs"), "{fish}");
    // bash itself accepts the script.
    run(Command::new("bash").arg("-n").arg("-c").arg(&bash));
}

#[test]
fn man_page_renders() {
    let page = stdout(isofs().arg("man"));
    assert!(page.contains(".TH isofs 1"), "{page}");
    assert!(page.contains("ventoy"), "{page}");
    if Command::new("man").arg("--version").output().is_err() {
        eprintln!("man not installed: roff checked textually only");
        return;
    }
    let mut child = Command::new("man")
        .args(["-l", "-"])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NAME") && text.contains("isofs"), "{text}");
    // One page for everything: each command with its options, no pages that do not exist, and
    // the examples as written (one command a line).
    assert!(!page.contains("isofs\\-build(1)"), "{page}");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in [
        "COMMANDS",
        "isofs build [--out]",
        "--compress-image",
        "EXIT STATUS",
    ] {
        assert!(flat.contains(want), "{want:?} not in\n{text}");
    }
    assert!(
        text.lines().any(|l| l.trim() == "isofs umount /mnt/isos"),
        "{text}"
    );
}

/// `isofs man | head -1`: a reader that stops early ends isofs quietly (SIGPIPE, as any Unix
/// tool), not with a panic about a broken pipe.
#[test]
fn output_into_a_closed_pipe_is_no_panic() {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' man | head -c 1 > /dev/null",
            env!("CARGO_BIN_EXE_isofs")
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !err.contains("panicked"), "{err}");
}
