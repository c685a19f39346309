//! # forkswitch
//!
//! The softswitch binary: reads the TOML configuration, sets up logging,
//! and runs the shell ([`shell`]: the switch's own thread, with a tokio
//! runtime beside it) around the switch core (crate `switch`, one sans-IO
//! state machine) until SIGINT/SIGTERM. All SIP logic lives in the library
//! crates; this crate only does I/O.

/// mimalloc: measured faster than glibc malloc on the call path, and it
/// returns freed memory (transactions linger 32 s, then go) to the system.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod capture;
mod cluster;
mod config;
mod dns;
mod gen_cert;
mod http;
mod shell;

use clap::{Parser, Subcommand};
use config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// forkswitch: a SIP B2BUA with native call forking.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the softswitch.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = "config/forkswitch.toml")]
        config: PathBuf,
        /// Log format (overrides the config file).
        #[arg(long, value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        /// Configuration file.
        file: PathBuf,
    },
    /// Write a self-signed cert.pem and key.pem for localhost and 127.0.0.1
    /// (for local TLS and WSS tests) into a directory.
    GenCert {
        /// Where to write them (made if missing).
        dir: PathBuf,
    },
}

fn init_logging(level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // Security events (target `security`, WARN) are logged at every
    // configured level, for fail2ban; RUST_LOG, when set, decides alone.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},security=warn")));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal())
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => b.json().flatten_event(true).init(),
        LogFormat::Human => b.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::GenCert { dir } => match gen_cert::write(&dir) {
            Ok((cert, key)) => {
                println!("wrote {} and {}", cert.display(), key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run { config, log_format } => {
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(&cfg.log.level, log_format.unwrap_or(cfg.log.format));
            // The switch core has a single owner: this thread, which also
            // reads and writes UDP in batches (shell.rs). Stream
            // connections, DNS and signals run on one more thread; the store
            // writes on its own, the REST API on its own.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("forkswitch-io")
                .enable_all()
                .build();
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let done = shell::run(cfg, &rt);
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    tracing::error!(error = %e, "fatal");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
