//! The `ferrogate` binary: `run`, `check` and `demo`; `schema`, `completions` and `manpage`
//! print what editors, shells and `man` read (the package installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use ferrogate::config;
use ferrogate::{Gateway, StartOptions};

/// `-V`: the version and the commit; `--version` adds the features and the target.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERROGATE_COMMIT"),
    ")"
);
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("FERROGATE_COMMIT"),
    "\nfeatures: ",
    env!("FERROGATE_FEATURES"),
    "\ntarget: ",
    env!("FERROGATE_TARGET"),
);

/// What `--help` and the manual page add after the commands.
const AFTER_HELP: &str = "\
Signals (ferrogate run):
  SIGHUP           reload the configuration; one that fails to load is refused, the running one stays
  SIGTERM, SIGINT  stop accepting, drain open requests for up to shutdown_drain, exit 0

Environment:
  FERROGATE_LOG    log filter (tracing syntax), default info

Files (Debian package):
  /etc/ferrogate/ferrogate.yaml              the configuration of the systemd unit ferrogate.service
  /usr/share/ferrogate/ferrogate.schema.json the configuration's JSON Schema
  /usr/share/doc/ferrogate/                  config.md (every key), install.md, examples/";

#[derive(Parser)]
#[command(
    name = "ferrogate",
    version = VERSION,
    long_version = LONG_VERSION,
    about = "An HTTP API gateway",
    long_about = "Ferrogate: an HTTP API gateway in one binary. It routes requests by host, path, \
method, header and query to groups of upstream targets, and balances, health-checks, retries, \
rate-limits, caches, authenticates and validates them on the way, as its YAML configuration \
says (`ferrogate check` validates one).",
    after_long_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file (reloads on change and on SIGHUP).
    Run {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a configuration file; lists every problem and exits non-zero on any.
    Check {
        /// The YAML configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Run on an example configuration with built-in backends on loopback.
    Demo {
        /// Address of the demo listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin listener (metrics).
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Print the configuration's JSON Schema (for editors: docs/install.md).
    Schema,
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into a directory.
    Manpage {
        /// Write ferrogate.1 and a ferrogate-COMMAND.1 per command here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERROGATE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let result = match cli.command {
        Command::Check { config } => return check(&config),
        Command::Run { config } => run(&config),
        Command::Demo { listen, admin } => demo(listen, admin),
        Command::Schema => print(config::schema_json()),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ferrogate", &mut out);
            print(out)
        }
        Command::Manpage { out_dir: None } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(anyhow::Error::from)
                .and_then(|()| print(out))
        }
        Command::Manpage { out_dir: Some(dir) } => std::fs::create_dir_all(&dir)
            .and_then(|()| clap_mangen::generate_to(Cli::command(), &dir))
            .with_context(|| format!("cannot write manual pages to {}", dir.display())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(text: impl AsRef<[u8]>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())?;
    out.flush()?;
    Ok(())
}

fn check(path: &Path) -> ExitCode {
    match config::load(path)
        .map_err(ferrogate::gateway::GatewayError::from)
        .and_then(|c| {
            // Compile too: certificates load and routes build, as they would at start.
            let metrics = ferrogate::observe::metrics::Metrics::new();
            ferrogate::snapshot::Snapshot::build(
                c,
                &metrics,
                None,
                &ferrogate::snapshot::Kept {
                    targets: ferrogate::snapshot::TargetStates::default(),
                    rate_limits: ferrogate::ratelimit::RateLimiter::offline(
                        metrics.rate_limits.clone(),
                    ),
                    background: ferrogate::background::Background::offline(),
                    caches: ferrogate::cache::service::Caches::default(),
                    queues: None,
                    tunnels: ferrogate::tunnel::Tunnels::new(metrics.tunnels.clone()),
                    dns: Default::default(),
                    history: Default::default(),
                },
            )
            .map_err(Into::into)
        }) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(ferrogate::gateway::GatewayError::Config(errs)) => {
            eprintln!("{}: {} problem(s)", path.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{}: 1 problem(s)\n  {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errs) => anyhow::bail!("{}: invalid configuration\n{errs}", path.display()),
    };
    let drain = config.shutdown_drain;
    let signals = Signals::install().context("cannot install signal handlers")?;
    let gateway = Gateway::start(
        config,
        StartOptions {
            config_path: Some(path.to_path_buf()),
            watch: true,
        },
    )
    .context("cannot start")?;
    for a in gateway.listener_addrs() {
        tracing::info!("listening on {a}");
    }
    if let Some(a) = gateway.admin_addr() {
        tracing::info!("admin on http://{a}");
        tracing::info!("dashboard on http://{a}/ui/");
    }
    signals.wait(&gateway);
    finish(gateway, drain);
    Ok(())
}

fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let backends = [
        ferrogate::demo::spawn_backend("alpha")?,
        ferrogate::demo::spawn_backend("beta")?,
        ferrogate::demo::spawn_backend("gamma")?,
    ];
    // The queued route's jobs outlive a demo run only in the system's temporary directory.
    let queue_dir = std::env::temp_dir().join(format!("ferrogate-demo-{}", listen.port()));
    let text = ferrogate::demo::config_text(listen, admin, backends, &queue_dir);
    let config = config::parse(&text, Path::new("."))
        .map_err(|e| anyhow::anyhow!("demo config is invalid: {e}"))?;
    let drain = config.shutdown_drain.min(std::time::Duration::from_secs(5));
    let signals = Signals::install().context("cannot install signal handlers")?;
    let gateway = Gateway::start(config, StartOptions::default()).with_context(|| {
        format!("cannot start the demo on {listen} (is the port in use? try --listen)")
    })?;
    let g = gateway.listener_addrs()[0];
    let a = gateway.admin_addr().unwrap_or(admin);
    ferrogate::demo::spawn_traffic(g).context("cannot start the demo traffic")?;
    println!(
        "Ferrogate demo: gateway on http://{g}, admin on http://{a}
Dashboard: http://{a}/ui/   (demo traffic, about 4 requests a second, is already flowing)
Backends alpha, beta, gamma run on {}, {}, {}.
The configuration in use:
{text}
Try:
  curl -s http://{g}/api/hello          # round robin over alpha (weight 2), beta, gamma; /api stripped
  for i in 1 2 3 4; do curl -s http://{g}/api/; done
  curl -s http://{g}/users/42 -H 'x-user: ada'   # consistent hash on x-user, path rewritten
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{{http_code}} ' http://{g}/limited; done  # 5 per 10 s, then 429
  curl -si http://{g}/private            # 401: needs an API key
  curl -s http://{g}/private -H 'x-api-key: demo-key'   # consumer demo-user (sent upstream as X-Consumer)
  curl -si http://{g}/cached/page                       # twice: the second is a cache hit (Cache-Status, Age)
  curl -si http://{g}/old                # 301 redirect
  curl -si http://{g}/nowhere            # 404 problem+json
  curl -si http://{g}/reports/monthly -d month=2026-11   # 202 and a Location: the job is queued
  curl -s http://{g}/jobs/reports/ID     # pending, running, then 303 to its result
  curl -sL http://{g}/jobs/reports/ID    # the backend's answer, once the job is done
  curl -s http://{a}/metrics | grep ferrogate_requests_total
Access log lines (JSON) follow below. Ctrl-C stops.",
        backends[0], backends[1], backends[2]
    );
    signals.wait(&gateway);
    finish(gateway, drain);
    Ok(())
}

/// The process's signal handlers. They are installed before the gateway binds anything:
/// a SIGHUP or SIGTERM sent as soon as the gateway answers must not meet the default
/// action, which ends the process and resets every open connection.
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let entered = rt.enter();
        let term = signal(SignalKind::terminate())?;
        let int = signal(SignalKind::interrupt())?;
        let hup = signal(SignalKind::hangup())?;
        drop(entered);
        Ok(Signals { rt, term, int, hup })
    }

    /// Blocks until SIGTERM or SIGINT; SIGHUP reloads the config meanwhile.
    fn wait(self, gateway: &Gateway) {
        let Signals {
            rt,
            mut term,
            mut int,
            mut hup,
        } = self;
        rt.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        let shared = gateway.shared.clone();
                        // Reload off this thread: it reads files and compiles the snapshot.
                        let _ = tokio::task::spawn_blocking(move || shared.reload()).await;
                    }
                }
            }
        });
    }
}

fn finish(gateway: Gateway, drain: std::time::Duration) {
    tracing::info!("shutting down: draining for up to {} ms", drain.as_millis());
    let left = gateway.shutdown(drain);
    if left > 0 {
        tracing::warn!("{left} connection(s) cut at the end of the drain time");
    }
}
