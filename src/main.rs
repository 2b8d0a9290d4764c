//! The `hoist` command line: thin wiring of clap, tracing and the library.

/// jemalloc where it is a dependency (see `Cargo.toml`); elsewhere the system allocator.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hoist::config::Config;

#[derive(Parser)]
#[command(
    name = "hoist",
    version,
    about = "GitLab webhook-driven deploys to Docker Swarm"
)]
struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook server and workers.
    Serve {
        /// Config file (default: $HOIST_CONFIG, else ./hoist.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Only validate the file; contact nothing.
        #[arg(long)]
        offline: bool,
    },
    /// Ask the running server to deploy (the same path as `/deploy`).
    #[command(group(clap::ArgGroup::new("what").required(true)))]
    Deploy {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Project path as configured.
        #[arg(long)]
        project: String,
        /// Environment name.
        #[arg(long)]
        env: String,
        /// Deploy the commit of this tag.
        #[arg(long, group = "what")]
        tag: Option<String>,
        /// Deploy the head of this merge request (IID).
        #[arg(long, group = "what")]
        mr: Option<u64>,
        /// Deploy the commit of this pipeline.
        #[arg(long, group = "what")]
        pipeline: Option<u64>,
        /// Follow the run; exit 0 if it succeeded, 1 if not.
        #[arg(long)]
        wait: bool,
    },
    /// Past and running deploy runs, newest first.
    History {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        env: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The project's webhook in GitLab: install it or show its state.
    Hook {
        #[command(subcommand)]
        action: HookAction,
    },
}

#[derive(Subcommand)]
enum HookAction {
    /// Create or update the project's webhook (same URL: update, never a duplicate).
    Install {
        /// Config file (default: $HOIST_CONFIG, else ./hoist.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Project path as configured.
        #[arg(long)]
        project: String,
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show the hook: events, alert_status, disabled_until, how to re-enable.
    Status {
        /// Config file (default: $HOIST_CONFIG, else ./hoist.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Project path as configured.
        #[arg(long)]
        project: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Serve { config } => serve(config),
        Command::Check { config, offline } => check(config, offline),
        Command::Deploy {
            config,
            project,
            env,
            tag,
            mr,
            pipeline,
            wait,
        } => {
            let request = hoist::engine::DeployRequest {
                project,
                env,
                tag,
                mr,
                pipeline,
                requested_by: None,
            };
            with_runtime(|| hoist::cli::deploy(config, request, wait))
        }
        Command::History {
            config,
            project,
            env,
            limit,
            json,
        } => with_runtime(|| hoist::cli::history(config, project, env, limit, json)),
        Command::Hook { action } => match action {
            HookAction::Install {
                config,
                project,
                dry_run,
            } => with_runtime(|| hoist::hook::install_command(config, project, dry_run)),
            HookAction::Status { config, project } => {
                with_runtime(|| hoist::hook::status_command(config, project))
            }
        },
    }
}

fn init_tracing(format: LogFormat) {
    hoist::logging::init(match format {
        LogFormat::Text => hoist::logging::LogFormat::Text,
        LogFormat::Json => hoist::logging::LogFormat::Json,
    });
}

/// Runs an async command; its `Err` is printed and becomes the exit code it carries.
fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), hoist::cli::CliError>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(f()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn load(flag: Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = Config::path_from(flag);
    Config::load(&path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn serve(flag: Option<PathBuf>) -> ExitCode {
    let config = match load(flag) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "{}: server.listen: cannot bind {}: {e}",
                    config.file.display(),
                    config.server.listen
                );
                return ExitCode::from(2);
            }
        };
        match hoist::server::run(config, listener, hoist::server::shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn check(flag: Option<PathBuf>, offline: bool) -> ExitCode {
    let config = match load(flag) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!(
        "ok   config {} ({} projects)",
        config.file.display(),
        config.projects.len()
    );
    if offline {
        return ExitCode::SUCCESS;
    }
    with_runtime(|| async move { hoist::cli::check_online(&config).await })
}
