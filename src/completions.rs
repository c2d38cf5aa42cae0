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

/// The roff man page isofs(1), as `isofs man` prints it.
pub fn man_page(out: &mut dyn Write) -> io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
}
