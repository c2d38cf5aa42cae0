use clap::Parser;
use isofs::cli::{self, Cli};
use isofs::inputs::InputError;
use isofs::ventoy_copy::VentoyError;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // fuser's own "Mounting ..." lines say nothing isofs does not say.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=warn")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not for a log file or the journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let cli = Cli::parse();
    // `isofs check | head` and friends: a closed pipe ends the process quietly, as for any Unix
    // tool, instead of a panic on the next print. Not for a mount, whose daemon must outlive
    // whatever read its log.
    if !matches!(cli.cmd, cli::Cmd::Mount { .. }) {
        // SAFETY: restores the default disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let bad_input = e.chain().any(|c| {
                c.is::<InputError>()
                    || c.downcast_ref::<VentoyError>()
                        .is_some_and(VentoyError::is_bad_input)
            }) || e
                .downcast_ref::<isofs::image::PlanError>()
                .is_some_and(|p| matches!(p, isofs::image::PlanError::Input(_)));
            eprintln!("isofs: {e:#}");
            if bad_input {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
