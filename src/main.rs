//! The `stage` binary: parse arguments, run, render any error once, exit with its code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use stage::cli::{self, Cli, CliError};
use stage::exit::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.only_prints() {
        // SAFETY: before any thread exists; restores the default disposition of one signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    raise_open_files_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STAGE_LOG")
                // sled logs each failed write of its own (a full disk: one per segment, a
                // flood) while the same failure reaches us as an error, which is said once.
                // `STAGE_LOG=sled=debug` still shows them.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sled=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Internal as u8);
        }
    };
    let code = match runtime.block_on(cli::main(cli)) {
        Ok(code) => code,
        Err(e) => {
            render(&e);
            e.exit()
        }
    };
    // Tasks still running are killed by their guards; don't wait for blocking threads.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code as u8)
}

fn render(e: &CliError) {
    match e {
        CliError::Spec(spec) => cli::render_spec_error(spec),
        other => {
            let mut msg = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                let text = s.to_string();
                if !msg.ends_with(&text) {
                    msg.push_str(": ");
                    msg.push_str(&text);
                }
                source = s.source();
            }
            let prefix = if std::io::stderr().is_terminal() {
                "\x1b[1;31merror\x1b[0m"
            } else {
                "error"
            };
            eprintln!("{prefix}: {msg}");
        }
    }
}

/// Raises the soft limit on open files to the hard one: login nodes often keep the soft
/// limit at 1024, which a pool of a few hundred hosts' connections and their transfers
/// would reach, while the hard limit is the one the site meant.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
