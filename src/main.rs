//! The `quotecast` binary: parses the command line and wires the server together.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use quotecast::config::{LogFormat, RawConfig};
use quotecast::demo::DemoConfig;
use quotecast::Server;

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
    Serve(Box<ServeArgs>),
    /// Print or check a configuration file.
    Config(ConfigArgs),
    /// Inspect channel namespaces.
    Channels(ChannelsArgs),
}

#[derive(Parser, Debug)]
struct ChannelsArgs {
    #[command(subcommand)]
    cmd: ChannelsCmd,
}

#[derive(Subcommand, Debug)]
enum ChannelsCmd {
    /// Which namespace a channel name falls in, its kind and history, and who may read and
    /// publish it (exit status 1 when a client could not use the name at all).
    Explain {
        /// The channel name, e.g. user:42:orders.
        name: String,
        /// Also say whether this user id may subscribe.
        #[arg(long)]
        user: Option<String>,
        /// Configuration file (default: the built-in defaults).
        #[arg(long, env = "QUOTECAST_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
        /// As `serve --demo` would see it (adds the demo's public catch-all).
        #[arg(long)]
        demo: bool,
    },
}

#[derive(Parser, Debug)]
struct ConfigArgs {
    /// Print a fully commented configuration file with every default.
    #[arg(long)]
    print_default: bool,
    /// Check a configuration file and exit (non-zero with FILE:LINE:COL: reason if bad).
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormatArg {
    Text,
    Json,
}

/// Flags override `QUOTECAST_*` environment variables, which override the `--config` file,
/// which overrides the defaults (see `quotecast config --print-default`). Value flags are
/// `Option`s without clap defaults, so `Some` means "given on the command line or in the
/// environment"; switches are checked with `ArgMatches::value_source`.
#[derive(Parser, Debug)]
struct ServeArgs {
    /// TOML configuration file (see `quotecast config --print-default`).
    #[arg(long, env = "QUOTECAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (WebSocket at /ws, HTTP API on the same port) [default: 127.0.0.1:8080].
    #[arg(long, env = "QUOTECAST_LISTEN")]
    listen: Option<SocketAddr>,
    /// Shards (threads) [default: one per core].
    #[arg(long, env = "QUOTECAST_SHARDS")]
    shards: Option<usize>,
    /// Run the built-in simulated market (opens the server to anonymous clients).
    #[arg(long, env = "QUOTECAST_DEMO")]
    demo: bool,
    /// Demo: quotes per second across all symbols [default: 2000].
    #[arg(long, env = "QUOTECAST_DEMO_QUOTES_PER_SEC")]
    demo_quotes_per_sec: Option<u32>,
    /// Demo: number of symbols [default: 300].
    #[arg(long, env = "QUOTECAST_DEMO_SYMBOLS")]
    demo_symbols: Option<usize>,
    /// Server ping interval in milliseconds [default: 30000].
    #[arg(long, env = "QUOTECAST_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Largest client message in bytes [default: 262144].
    #[arg(long, env = "QUOTECAST_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// How long a stream subscriber's oldest unsent event may wait before the client is
    /// closed as a slow consumer (4008), in milliseconds [default: 5000].
    #[arg(long, env = "QUOTECAST_SLOW_CONSUMER_LAG_MS")]
    slow_consumer_lag_ms: Option<u64>,
    /// Hard cap on a connection's queued non-conflated frames (memory safety) [default:
    /// 65536].
    #[arg(long, env = "QUOTECAST_MAX_QUEUE_FRAMES")]
    max_queue_frames: Option<usize>,
    /// Hard cap on a connection's queued non-conflated bytes (memory safety) [default:
    /// 16777216].
    #[arg(long, env = "QUOTECAST_MAX_QUEUE_BYTES")]
    max_queue_bytes: Option<usize>,
    /// Most unsent bytes a socket may hold in the kernel (TCP_NOTSENT_LOWAT), 0 for no
    /// limit [default: 16384].
    #[arg(long, env = "QUOTECAST_SOCKET_NOTSENT_LOWAT")]
    socket_notsent_lowat: Option<usize>,
    /// Most subscriptions per connection [default: 1024].
    #[arg(long, env = "QUOTECAST_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    /// Graceful-shutdown drain limit in milliseconds [default: 5000].
    #[arg(long, env = "QUOTECAST_DRAIN_MS")]
    drain_ms: Option<u64>,
    /// HS256 shared secret for client tokens (prefer the environment variable).
    #[arg(long, env = "QUOTECAST_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM file with the RS256 public key for client tokens.
    #[arg(long, env = "QUOTECAST_JWT_RS256_PUBLIC_KEY")]
    jwt_rs256_public_key: Option<PathBuf>,
    /// PEM file with the ES256 public key for client tokens.
    #[arg(long, env = "QUOTECAST_JWT_ES256_PUBLIC_KEY")]
    jwt_es256_public_key: Option<PathBuf>,
    /// Required token issuer (`iss`).
    #[arg(long, env = "QUOTECAST_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required token audience (`aud`).
    #[arg(long, env = "QUOTECAST_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Let clients without a token subscribe to public channels.
    #[arg(long, env = "QUOTECAST_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Let clients without a token publish (load tests, local development; never production).
    #[arg(long, env = "QUOTECAST_ANONYMOUS_PUBLISH")]
    anonymous_publish: bool,
    /// API keys for POST /api/publish (comma-separated; prefer the environment variable).
    #[arg(
        long,
        env = "QUOTECAST_API_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    api_key: Vec<String>,
    /// Open WebSocket connections per user [default: 5].
    #[arg(long, env = "QUOTECAST_MAX_CONNECTIONS_PER_USER")]
    max_connections_per_user: Option<usize>,
    /// Allowed browser Origin (repeatable, or comma-separated in the environment); none allows any.
    #[arg(long, env = "QUOTECAST_ORIGINS", value_delimiter = ',')]
    origin: Vec<String>,
    /// Client ops per second per connection (publishers are exempt) [default: 50].
    #[arg(long, env = "QUOTECAST_OPS_PER_SEC")]
    ops_per_sec: Option<f64>,
    /// Log format on stderr [default: text].
    #[arg(long, value_enum, env = "QUOTECAST_LOG_FORMAT")]
    log_format: Option<LogFormatArg>,
    /// Cluster mode: the Redis every node shares, `redis://[:password@]host:port[/db]`.
    #[arg(
        long,
        env = "QUOTECAST_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    redis: Option<String>,
    /// Cluster mode: this node's name, unique per running node [default: random].
    #[arg(long, env = "QUOTECAST_NODE_ID")]
    node_id: Option<String>,
    /// Cluster mode: a crashed node's presence entries vanish after this [default: 10000].
    #[arg(long, env = "QUOTECAST_PRESENCE_TTL_MS")]
    presence_ttl_ms: Option<u64>,
    /// Cluster mode: `/ready` fails while Redis is unreachable (publishes cannot be sequenced).
    #[arg(long, env = "QUOTECAST_READY_REQUIRES_REDIS")]
    ready_requires_redis: bool,
    /// Cluster mode with Redis Sentinel: the master's name (`--redis` then gives only the
    /// password and database).
    #[arg(long, env = "QUOTECAST_SENTINEL_MASTER")]
    sentinel_master: Option<String>,
    /// Cluster mode with Redis Sentinel: a sentinel's `host:port` (repeat, or comma-separate).
    #[arg(long, env = "QUOTECAST_SENTINELS", value_delimiter = ',')]
    sentinel: Vec<String>,
}

impl ServeArgs {
    /// Lays the flags and environment variables that were given over `raw` (the file).
    fn apply(&self, raw: &mut RawConfig, m: &ArgMatches) {
        // A switch given as a flag or in the environment wins over the file, either way.
        let given = |id: &str| {
            matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut raw.listen, &self.listen);
        set(&mut raw.shards, &self.shards);
        set(&mut raw.heartbeat_ms, &self.heartbeat_ms);
        set(&mut raw.max_message_bytes, &self.max_message_bytes);
        set(
            &mut raw.queue.slow_consumer_lag_ms,
            &self.slow_consumer_lag_ms,
        );
        set(&mut raw.queue.max_frames, &self.max_queue_frames);
        set(&mut raw.queue.max_bytes, &self.max_queue_bytes);
        set(&mut raw.max_subscriptions, &self.max_subscriptions);
        set(&mut raw.socket_notsent_lowat, &self.socket_notsent_lowat);
        set(&mut raw.shutdown.drain_ms, &self.drain_ms);
        set(&mut raw.demo.symbols, &self.demo_symbols);
        set(&mut raw.demo.quotes_per_sec, &self.demo_quotes_per_sec);
        if given("demo") {
            raw.demo.enabled = self.demo;
        }
        let auth = &mut raw.auth;
        if given("allow_anonymous") {
            auth.allow_anonymous = self.allow_anonymous;
        }
        if given("anonymous_publish") {
            auth.anonymous_publish = self.anonymous_publish;
        }
        if given("api_key") {
            auth.api_keys = self.api_key.clone();
        }
        if self.jwt_secret.is_some() {
            auth.jwt_secret = self.jwt_secret.clone();
        }
        if self.jwt_rs256_public_key.is_some() {
            auth.jwt_rs256_public_key = self.jwt_rs256_public_key.clone();
        }
        if self.jwt_es256_public_key.is_some() {
            auth.jwt_es256_public_key = self.jwt_es256_public_key.clone();
        }
        if self.jwt_issuer.is_some() {
            auth.jwt_issuer = self.jwt_issuer.clone();
        }
        if self.jwt_audience.is_some() {
            auth.jwt_audience = self.jwt_audience.clone();
        }
        set(&mut raw.cluster.redis, &self.redis);
        set(&mut raw.cluster.node_id, &self.node_id);
        set(&mut raw.cluster.presence_ttl_ms, &self.presence_ttl_ms);
        if given("ready_requires_redis") {
            raw.cluster.ready_requires_redis = self.ready_requires_redis;
        }
        set(&mut raw.cluster.sentinel_master, &self.sentinel_master);
        if !self.sentinel.is_empty() {
            raw.cluster.sentinels = self.sentinel.clone();
        }
        let limits = &mut raw.limits;
        set(
            &mut limits.max_connections_per_user,
            &self.max_connections_per_user,
        );
        if let Some(r) = self.ops_per_sec {
            limits.ops_per_sec = r;
            // The burst follows the rate given on the command line.
            limits.ops_burst = None;
        }
        if given("origin") {
            limits.origins = self.origin.clone();
        }
        match self.log_format {
            Some(LogFormatArg::Text) => raw.log.format = LogFormat::Text,
            Some(LogFormatArg::Json) => raw.log.format = LogFormat::Json,
            None => {}
        }
    }
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.cmd {
        Cmd::Serve(a) => {
            let empty = ArgMatches::default();
            let m = matches.subcommand_matches("serve").unwrap_or(&empty);
            serve(*a, m)
        }
        Cmd::Channels(c) => match c.cmd {
            ChannelsCmd::Explain {
                name,
                user,
                config,
                demo,
            } => {
                let mut raw = match &config {
                    Some(path) => RawConfig::load(path)?,
                    None => RawConfig::default(),
                };
                raw.demo.enabled |= demo;
                let cfg = raw.into_config()?;
                let (text, usable) =
                    quotecast::config::explain::explain(&cfg.rules, &name, user.as_deref());
                print!("{text}");
                if !usable {
                    std::process::exit(1);
                }
                Ok(())
            }
        },
        Cmd::Config(c) => {
            if let Some(path) = &c.check {
                RawConfig::load(path)?.into_config()?;
                println!("{}: ok", path.display());
            } else if c.print_default {
                print!("{}", quotecast::config::DEFAULT_TOML);
            } else {
                anyhow::bail!("say --print-default or --check FILE");
            }
            Ok(())
        }
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

fn serve(a: ServeArgs, m: &ArgMatches) -> anyhow::Result<()> {
    let mut raw = match &a.config {
        Some(path) => RawConfig::load(path)?,
        None => RawConfig::default(),
    };
    a.apply(&mut raw, m);
    let mut cfg = raw.into_config()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    if let Some(path) = &a.config {
        tracing::info!(file = %path.display(), "configuration file read");
    }
    let demo = cfg.demo.clone();
    let access = &mut cfg.access;
    if access.anonymous_publish && demo.is_none() {
        tracing::warn!("anonymous publishing: ANYONE who can reach this port may publish; never use this in production");
    }
    if demo.is_some() {
        // Demo tokens for the demo users' private channels, signed with a fresh random
        // secret (the configuration refuses a real `jwt_secret` together with the demo).
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
        // A demo Pusher app (`docs/pusher.md`) on the same channels, unless apps are configured.
        if cfg.pusher_apps.is_empty() {
            let mut b = [0u8; 16];
            rand::Rng::fill(&mut rand::thread_rng(), &mut b);
            let secret = quotecast::pusher::sign::hex(&b);
            cfg.pusher_apps
                .push(quotecast::pusher::config::PusherApp::new(
                    "demo", "demo-key", &secret,
                ));
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
    for (i, rule) in cfg.rules.rules().iter().enumerate() {
        tracing::info!(
            "namespace #{}: {}; publish: {}",
            i + 1,
            quotecast::config::explain::describe(rule),
            quotecast::config::explain::WHO_PUBLISHES
        );
    }
    if cfg.demo.is_none() {
        tracing::info!("a channel name no namespace matches is refused (unknown_channel)");
    }
    raise_open_file_limit();
    let shards = cfg.shards;
    let demo_tokens = cfg.demo_tokens.clone();
    let pusher_apps = cfg.pusher_apps.clone();
    // SIGTERM/SIGINT handlers exist before the first connection is accepted: a signal that
    // arrives while the server starts is a graceful drain, never the default (instant) exit.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut term, mut int) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _rt = rt.enter();
        (
            signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        )
    };
    let server = Server::start(cfg)?;
    let addr = server.local_addr();
    // Machine-readable line for scripts and the load tester.
    println!("listening on {addr}");
    tracing::info!(%addr, shards, "quotecast {} serving ws://{addr}/ws", env!("CARGO_PKG_VERSION"));
    if demo.is_none() {
        eprintln!("  live board: http://{addr}/   WebSocket: ws://{addr}/ws");
    }
    if let Some(d) = &demo {
        eprintln!(
            "\n  DEMO MODE: OPEN TO ANYONE: anonymous clients may subscribe to public channels AND publish.\n  \
             {} symbols, {} quotes/s, private channels for users {:?}\n  \
             Live board: http://{addr}/\n  \
             Connect:   websocat ws://{addr}/ws\n  \
             Subscribe: {{\"op\":\"subscribe\",\"channels\":[\"quotes.AAPL\",\"trades.AAPL\",\"market.status\"],\"snapshot\":true}}\n  \
             Publish:   curl -X POST http://{addr}/api/publish -d '{{\"channel\":\"user.42.orders\",\"event\":\"order_update\",\"data\":{{\"order_id\":\"ORD_1\",\"status\":\"filled\"}}}}'\n",
            d.symbols, d.quotes_per_sec, d.users
        );
        eprintln!("  Anyone may subscribe to public channels and publish; any other name is a public stream (demo catch-all \"**\").");
        eprintln!("  Private channels user.<id>.** need the user's token (24 h, signed with a throwaway secret of this process):");
        for (user, token) in &demo_tokens {
            eprintln!("    user {user}: ws://{addr}/ws?token={token}");
        }
        for app in &pusher_apps {
            eprintln!(
                "  Pusher app (pusher-js, Laravel Echo, Pusher server SDKs; docs/pusher.md):\n    \
                 app_id={} key={} secret={}  ws://{addr}/app/{}?protocol=7  channels: quotes.AAPL, trades.AAPL, ...",
                app.id, app.key, app.secret, app.key
            );
        }
        eprintln!();
    }
    rt.block_on(async {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
    });
    let report = server.shutdown();
    let h = &report.latency;
    tracing::info!(
        published = report.stats.published,
        delivered = report.stats.delivered,
        slow_consumer_closes = report.stats.slow_closes.total(),
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
