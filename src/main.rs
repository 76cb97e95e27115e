//! The `quotecast` binary: parses the command line and wires the server together.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use quotecast::demo::DemoConfig;
use quotecast::engine::outbound::QueueLimits;
use quotecast::{Config, Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "quotecast",
    version,
    about = "Market-data fan-out over WebSocket"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the server.
    Serve(ServeArgs),
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Parser, Debug)]
struct ServeArgs {
    /// Address to listen on (WebSocket at /ws, HTTP API on the same port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Shards (threads); default one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// Run the built-in simulated market.
    #[arg(long)]
    demo: bool,
    /// Demo: quotes per second across all symbols.
    #[arg(long, default_value_t = 2000)]
    demo_quotes_per_sec: u32,
    /// Demo: number of symbols.
    #[arg(long, default_value_t = 300)]
    demo_symbols: usize,
    /// Server ping interval in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    heartbeat_ms: u64,
    /// Largest client message in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    max_message_bytes: usize,
    /// Per-connection limit on queued non-conflated frames.
    #[arg(long, default_value_t = 4096)]
    max_queue_frames: usize,
    /// Per-connection limit on queued non-conflated bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_queue_bytes: usize,
    /// Most subscriptions per connection.
    #[arg(long, default_value_t = 1024)]
    max_subscriptions: usize,
    /// Graceful-shutdown drain limit in milliseconds.
    #[arg(long, default_value_t = 5000)]
    drain_ms: u64,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve(a) => serve(a),
    }
}

/// Raises the soft limit on open files to the hard limit: every connection is a file, and
/// the common default soft limit (1,024) would refuse connections long before memory or CPU
/// run out.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass, which lives on
    // this stack frame for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match a.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let mut cfg = Config {
        listen: a.listen,
        heartbeat: Duration::from_millis(a.heartbeat_ms),
        max_message_bytes: a.max_message_bytes,
        queue: QueueLimits {
            max_frames: a.max_queue_frames,
            max_bytes: a.max_queue_bytes,
        },
        drain: Duration::from_millis(a.drain_ms),
        max_subscriptions: a.max_subscriptions,
        ..Config::default()
    };
    if let Some(s) = a.shards {
        cfg.shards = s;
    }
    let demo = a.demo.then(|| DemoConfig {
        symbols: a.demo_symbols,
        quotes_per_sec: a.demo_quotes_per_sec,
        ..DemoConfig::default()
    });
    raise_open_file_limit();
    let shards = cfg.shards;
    let server = Server::start_with_demo(cfg, demo.clone())?;
    let addr = server.local_addr();
    // Machine-readable line for scripts and the load tester.
    println!("listening on {addr}");
    tracing::info!(%addr, shards, "quotecast {} serving ws://{addr}/ws", env!("CARGO_PKG_VERSION"));
    if let Some(d) = &demo {
        eprintln!(
            "\n  DEMO MODE: open market, no authentication.\n  \
             {} symbols, {} quotes/s, private channels for users {:?}\n  \
             Connect:   websocat ws://{addr}/ws\n  \
             Subscribe: {{\"op\":\"subscribe\",\"channels\":[\"quotes.AAPL\",\"trades.AAPL\",\"user.42.orders\"],\"snapshot\":true}}\n  \
             Publish:   curl -X POST http://{addr}/api/publish -d '{{\"channel\":\"user.42.orders\",\"event\":\"order_update\",\"data\":{{\"status\":\"filled\"}}}}'\n",
            d.symbols, d.quotes_per_sec, d.users
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        anyhow::Ok(())
    })?;
    let report = server.shutdown();
    let h = &report.latency;
    tracing::info!(
        published = report.stats.published,
        delivered = report.stats.delivered,
        slow_consumer_closes = report.stats.slow_closes,
        "stopped"
    );
    if !h.is_empty() {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        eprintln!(
            "ingest -> socket write latency over {} event batches: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
            h.len(),
            us(0.5),
            us(0.99),
            us(0.999),
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}
