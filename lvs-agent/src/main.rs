//! The `lvs-agent` command line.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lvs_agent::{
    config,
    daemon::{self, RunOptions},
    dataplane::{AttachMode, pin},
    netlink::Netlink,
    realserver, socket,
};
use lvs_common::sched_ext::tcp_state::Timeouts;
use tracing::Level;

mod logging;
use logging::{LogFormat, report};

#[derive(Parser)]
#[command(name = "lvs-agent", version, about = "XDP load balancer driven by keepalived.conf")]
struct Cli {
    /// Check the configuration and exit (keepalived's `-t`): 0 when it can run, 4 when not.
    #[arg(short = 't', long = "config-test")]
    config_test: bool,
    /// keepalived.conf to check with `-t`.
    #[arg(short = 'f', long = "use-file", default_value = config::DEFAULT_PATH, requires = "config_test")]
    config: PathBuf,
    /// Log format on stderr: `auto` is human on a terminal, syslog when stderr is the journal
    /// (JOURNAL_STREAM), human without colours otherwise; `syslog` prefixes each line with its
    /// `<PRIORITY>` (sd-daemon(3)) and no timestamp; `json` is one object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Auto, global = true)]
    log_format: LogFormat,
    /// Also append the log to FILE (human format with timestamps, no colours). It is opened
    /// once: rotate it with logrotate's `copytruncate`.
    #[arg(long, value_name = "FILE", global = true)]
    log_file: Option<PathBuf>,
    /// Debug detail (keepalived's `-D`): lvs-agent's debug events, on top of RUST_LOG.
    #[arg(short = 'D', long = "log-detail", global = true)]
    log_detail: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Load the XDP program, forward the configured DR services until SIGINT/SIGTERM.
    Run {
        /// keepalived.conf to read.
        #[arg(short = 'f', long = "use-file", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// Interface facing clients and real servers (one L2 segment, as LVS-DR requires).
        #[arg(short, long)]
        interface: String,
        /// XDP attach mode.
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        xdp_mode: AttachMode,
        /// Flow-table size: connections remembered per address family (the table has two
        /// slots per flow; see README).
        #[arg(long, default_value_t = lvs_common::maps::DEFAULT_FLOWS)]
        flows: u32,
        /// Seconds to wait at start-up for real servers' MACs before forwarding anyway.
        #[arg(long, default_value_t = 3)]
        resolve_wait: u64,
        /// Idle timeouts in seconds, as `ipvsadm --set TCP TCPFIN UDP`; overrides global_defs
        /// `lvs_timeouts` (default 900 120 300; the flow table measures at most 65534).
        #[arg(long, num_args = 3, value_names = ["TCP", "TCPFIN", "UDP"])]
        lvs_timeouts: Option<Vec<u32>>,
        /// Seconds for one sweep of idle flows out of the whole flow table (swept in 64 parts,
        /// one every 1/64 of this).
        #[arg(long, default_value_t = 30)]
        sweep: u64,
        /// Seconds between checks of the kernel IPVS table (NAT/TUN services) for drift: entries
        /// added or removed behind the agent's back are put right.
        #[arg(long, default_value_t = 5)]
        ipvs_check: u64,
        /// Serve Prometheus `/metrics` on ADDR:PORT (`[::1]:9469` for IPv6); `none` turns it off.
        #[arg(long, value_name = "ADDR:PORT", default_value = lvs_agent::metrics::DEFAULT_ADDRESS, value_parser = metrics_address)]
        metrics_address: MetricsAddress,
        /// Pin maps and XDP link under DIR (a bpffs), so that the data plane keeps forwarding
        /// when the agent stops and a restarted agent adopts it without a gap. Default: under
        /// /sys/fs/bpf/lvs-xdp when /sys/fs/bpf is a bpffs.
        #[arg(long, value_name = "DIR", conflicts_with = "no_pin")]
        pin_dir: Option<PathBuf>,
        /// Pin nothing: the program is detached when the agent stops.
        #[arg(long)]
        no_pin: bool,
    },
    /// Remove a data plane that outlived its agent: detach the pinned XDP program from the
    /// interface and delete its pinned maps (established flows are forgotten).
    Teardown {
        /// The interface the data plane is on.
        #[arg(short, long)]
        interface: String,
        /// The pin directory the agent used (`run --pin-dir`).
        #[arg(long, value_name = "DIR", default_value = pin::DEFAULT_BASE)]
        pin_dir: PathBuf,
    },
    /// Check a keepalived.conf without running anything: every problem is printed with its
    /// file:line:column; exits 0 when `run` would accept it, 4 when not (keepalived's
    /// `--config-test` exit codes).
    ConfigTest {
        /// keepalived.conf to check.
        #[arg(short = 'f', long = "use-file", default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Prepare (or undo) this host as an LVS-DR real server for a VIP: the VIP as a host route
    /// on `lo`, arp_ignore=1 and arp_announce=2.
    Realserver {
        #[arg(value_parser = ["up", "down"])]
        action: String,
        /// Virtual IP (repeat for several).
        #[arg(long, required = true)]
        vip: Vec<IpAddr>,
    },
    /// The running agent's services and real servers, as `ipvsadm -Ln` shows them (root only).
    List {
        /// The agent's interface (default: the only agent running).
        #[arg(short, long)]
        interface: Option<String>,
        /// Numeric output, as ipvsadm's `-n` (addresses are never resolved; accepted for habit).
        #[arg(short = 'n', long)]
        numeric: bool,
        /// Counters, as `ipvsadm -Ln --stats`.
        #[arg(long, conflicts_with_all = ["rate", "connections"])]
        stats: bool,
        /// Rates, as `ipvsadm -Ln --rate`.
        #[arg(long, conflicts_with = "connections")]
        rate: bool,
        /// The connection (flow) table, as `ipvsadm -Lnc`.
        #[arg(short = 'c', long)]
        connections: bool,
        /// A JSON document: services with counters and rates, and the connections with -c.
        #[arg(long)]
        json: bool,
    },
    /// The running agent at a glance: interface, XDP mode, uptime, reloads, and per VIP its
    /// services and real servers (root only).
    Status {
        /// The agent's interface (default: the only agent running).
        #[arg(short, long)]
        interface: Option<String>,
        /// A JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `--metrics-address`: a socket address, or `none` (or empty) for no endpoint.
#[derive(Clone, Debug)]
struct MetricsAddress(Option<std::net::SocketAddr>);

fn metrics_address(s: &str) -> Result<MetricsAddress, String> {
    if s.is_empty() || s.eq_ignore_ascii_case("none") {
        return Ok(MetricsAddress(None));
    }
    s.parse()
        .map(|a| MetricsAddress(Some(a)))
        .map_err(|_| format!("`{s}` is not ADDR:PORT (e.g. 127.0.0.1:9469 or [::1]:9469) or `none`"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = logging::LogOptions { format: cli.log_format, file: cli.log_file.clone(), detail: cli.log_detail };
    let _log = match logging::init(&log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("lvs-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    if cli.config_test {
        return config_test(&cli.config);
    }
    if let Some(Command::ConfigTest { config }) = &cli.command {
        return config_test(config);
    }
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(Level::ERROR, &format!("lvs-agent: {}", one_message(&e)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once (our error messages already quote their source).
fn one_message(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}

/// keepalived's `--config-test` exit codes (lib/scheduler.h `enum chk_exit_code`).
const EXIT_CONFIG: u8 = 4;

/// Parses and plans `path` as `run` would, printing every problem; the exit code says
/// whether `run` would accept it.
fn config_test(path: &std::path::Path) -> ExitCode {
    let checked = config::load(path).and_then(|loaded| {
        let (_, plan_warnings) = lvs_agent::desired::plan(&loaded.config)?;
        // VRRP instances as `run` would take them (interfaces are only known at run time).
        lvs_agent::vrrp::instance::specs(&loaded.config, "-i").map_err(config::ConfigErrors)?;
        Ok((loaded, plan_warnings))
    });
    match checked {
        Ok((loaded, plan_warnings)) => {
            let inactive = loaded.config.inactive_features();
            let warnings: Vec<_> = loaded.warnings.iter().chain(&plan_warnings).chain(&inactive).collect();
            for w in &warnings {
                report(Level::WARN, &format!("warning: {w}"));
            }
            report(
                Level::INFO,
                &format!(
                    "{}: configuration OK ({} virtual servers, {} warnings)",
                    path.display(),
                    loaded.config.virtual_servers.len(),
                    warnings.len()
                ),
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                report(Level::ERROR, &format!("error: {e}"));
            }
            report(Level::ERROR, &format!("{}: {} errors; lvs-agent would not start", path.display(), errors.0.len()));
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let Some(command) = cli.command else {
        anyhow::bail!(
            "nothing to do: give a command (run, list, status, config-test, realserver, teardown) or -t; see --help"
        );
    };
    match command {
        Command::ConfigTest { .. } => unreachable!("handled in main"),
        Command::Run {
            config,
            interface,
            xdp_mode,
            flows,
            resolve_wait,
            lvs_timeouts,
            sweep,
            ipvs_check,
            metrics_address,
            pin_dir,
            no_pin,
        } => {
            let timeouts = lvs_timeouts.map(|t| Timeouts { tcp: t[0], tcpfin: t[1], udp: t[2] });
            let pin = match (pin_dir, no_pin) {
                (_, true) => daemon::Pinning::Off,
                (Some(dir), false) => daemon::Pinning::Under(dir),
                (None, false) => daemon::Pinning::Auto,
            };
            rt.block_on(daemon::run(RunOptions {
                config,
                interface,
                mode: xdp_mode,
                flows,
                resolve_wait: Duration::from_secs(resolve_wait),
                timeouts,
                sweep: Duration::from_secs(sweep.max(1)),
                ipvs_check: Duration::from_secs(ipvs_check.max(1)),
                metrics: metrics_address.0,
                pin,
            }))?;
        }
        Command::Teardown { interface, pin_dir } => teardown(&rt, &interface, &pin_dir)?,
        Command::Realserver { action, vip } => rt.block_on(async {
            let nl = Netlink::connect().await?;
            for v in vip {
                if action == "up" {
                    realserver::up(&nl, v).await?;
                    println!("real server prepared for VIP {v}");
                } else {
                    realserver::down(&nl, v).await?;
                    println!("VIP {v} removed from this real server");
                }
            }
            anyhow::Ok(())
        })?,
        Command::List { interface, numeric: _, stats, rate, connections, json } => {
            let req = socket::Request { view: socket::View::List, stats, rate, connections, json };
            print_view(&rt, interface.as_deref(), &req)?;
        }
        Command::Status { interface, json } => print_view(&rt, interface.as_deref(), &socket::Request::status(json))?,
    }
    Ok(())
}

/// `lvs-agent teardown`: refuses while an agent runs on the interface (it holds the data
/// plane and would pin it again), then removes the pins.
fn teardown(rt: &tokio::runtime::Runtime, interface: &str, base: &std::path::Path) -> anyhow::Result<()> {
    let path = socket::socket_path(interface);
    if rt.block_on(socket::request(interface, &path, &socket::Request::status(true))).is_ok() {
        anyhow::bail!("an agent is running on {interface} (it answers on {}); stop it first", path.display());
    }
    let dir = pin::dir_for(base, interface);
    let removed = pin::teardown(base, &dir)?;
    if removed.is_empty() {
        println!("nothing pinned for {interface} under {}", dir.display());
    } else {
        println!("removed the data plane of {interface}: {} pins under {}", removed.len(), dir.display());
    }
    Ok(())
}

/// Asks the running agent (`lvs-agent list`, `status`) and prints its answer.
fn print_view(rt: &tokio::runtime::Runtime, interface: Option<&str>, req: &socket::Request) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (interface, path) = socket::pick(interface)?;
    let answer = rt.block_on(socket::request(&interface, &path, req))?;
    let mut out = std::io::stdout().lock();
    // A closed pipe (`lvs-agent list -c | head`) is not an error worth a message.
    match out.write_all(answer.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}
