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
    /// HS256 shared secret for client tokens (prefer the environment variable).
    #[arg(long, env = "QUOTECAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM file with the RS256 public key for client tokens.
    #[arg(long)]
    jwt_rs256_public_key: Option<std::path::PathBuf>,
    /// PEM file with the ES256 public key for client tokens.
    #[arg(long)]
    jwt_es256_public_key: Option<std::path::PathBuf>,
    /// Required token issuer (`iss`).
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// Required token audience (`aud`).
    #[arg(long)]
    jwt_audience: Option<String>,
    /// Let clients without a token subscribe to public channels.
    #[arg(long)]
    allow_anonymous: bool,
    /// Let clients without a token publish (load tests, local development; never production).
    #[arg(long)]
    anonymous_publish: bool,
    /// API keys for POST /api/publish (comma-separated; prefer the environment variable).
    #[arg(
        long,
        env = "QUOTECAST_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_key: Vec<String>,
    /// Open WebSocket connections per user.
    #[arg(long, default_value_t = 5)]
    max_connections_per_user: usize,
    /// Allowed browser Origin (repeatable); none allows any.
    #[arg(long)]
    origin: Vec<String>,
    /// Client ops per second per connection (publishers are exempt).
    #[arg(long, default_value_t = 50.0)]
    ops_per_sec: f64,
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
    let access = &mut cfg.access;
    if a.demo {
        *access = quotecast::config::AccessConfig::open();
    }
    access.allow_anonymous |= a.allow_anonymous || a.anonymous_publish;
    access.anonymous_publish |= a.anonymous_publish;
    if a.anonymous_publish && !a.demo {
        tracing::warn!("--anonymous-publish: ANYONE who can reach this port may publish; never use this in production");
    }
    access.max_connections_per_user = a.max_connections_per_user;
    access.ops_per_sec = a.ops_per_sec;
    access.ops_burst = (a.ops_per_sec * 2.0).max(1.0);
    access.origins = a.origin.clone();
    access.api_keys = a
        .api_key
        .iter()
        .filter(|k| !k.is_empty())
        .cloned()
        .collect();
    access.jwt.issuer = a.jwt_issuer.clone();
    access.jwt.audience = a.jwt_audience.clone();
    access.jwt.hs256_secret = a.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec());
    let read_pem =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    if let Some(p) = &a.jwt_rs256_public_key {
        access.jwt.rs256_public_pem = Some(read_pem(p)?);
    }
    if let Some(p) = &a.jwt_es256_public_key {
        access.jwt.es256_public_pem = Some(read_pem(p)?);
    }
    if a.demo {
        // Demo tokens for the demo users' private channels, signed with the configured
        // secret or a fresh random one.
        let secret = access.jwt.hs256_secret.get_or_insert_with(|| {
            let mut b = [0u8; 32];
            rand::Rng::fill(&mut rand::thread_rng(), &mut b);
            b.to_vec()
        });
        let exp = quotecast::auth::unix_now() + 24 * 3600;
        for user in DemoConfig::default().users {
            let claims =
                serde_json::json!({"sub": user.to_string(), "exp": exp, "role": "subscriber"});
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret),
            )?;
            cfg.demo_tokens.push((user.to_string(), token));
        }
    }
    let a_jwt = &cfg.access.jwt;
    let keys = a_jwt.hs256_secret.is_some()
        || a_jwt.rs256_public_pem.is_some()
        || a_jwt.es256_public_pem.is_some();
    if !keys && !cfg.access.allow_anonymous {
        tracing::warn!(
            "no token keys configured and anonymous access is off: every client will be refused \
             (set QUOTECAST_JWT_SECRET or --jwt-rs256-public-key, or --allow-anonymous, or use --demo)"
        );
    }
    let demo = a.demo.then(|| DemoConfig {
        symbols: a.demo_symbols,
        quotes_per_sec: a.demo_quotes_per_sec,
        ..DemoConfig::default()
    });
    raise_open_file_limit();
    let shards = cfg.shards;
    let demo_tokens = cfg.demo_tokens.clone();
    let server = Server::start_with_demo(cfg, demo.clone())?;
    let addr = server.local_addr();
    // Machine-readable line for scripts and the load tester.
    println!("listening on {addr}");
    tracing::info!(%addr, shards, "quotecast {} serving ws://{addr}/ws", env!("CARGO_PKG_VERSION"));
    if let Some(d) = &demo {
        eprintln!(
            "\n  DEMO MODE: OPEN TO ANYONE: anonymous clients may subscribe to public channels AND publish.\n  \
             {} symbols, {} quotes/s, private channels for users {:?}\n  \
             Connect:   websocat ws://{addr}/ws\n  \
             Subscribe: {{\"op\":\"subscribe\",\"channels\":[\"quotes.AAPL\",\"trades.AAPL\",\"market.status\"],\"snapshot\":true}}\n  \
             Publish:   curl -X POST http://{addr}/api/publish -d '{{\"channel\":\"user.42.orders\",\"event\":\"order_update\",\"data\":{{\"status\":\"filled\"}}}}'\n",
            d.symbols, d.quotes_per_sec, d.users
        );
        eprintln!("  Anyone may subscribe to public channels and publish. Private channels user.<id>.* need the user's token:");
        for (user, token) in &demo_tokens {
            eprintln!("    user {user}: ws://{addr}/ws?token={token}");
        }
        eprintln!();
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
