//! Command line of the loadtest and the named scenarios: every `run` flag is optional,
//! the scenario supplies defaults, and the result is one resolved `Settings`.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Load generator and latency meter for quotecast"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Run a scenario against a server.
    Run(Box<RunArgs>),
    /// Overlay the latency curves of several result JSON files in one SVG.
    Plot {
        /// Result files written by `run --out`.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scenario {
    Custom,
    Broadcast,
    Market,
    Idle,
    ConnectStorm,
    SlowConsumers,
    Msgpack,
    Smoke,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Popularity {
    /// Each client picks its channels at random, all equally likely.
    Uniform,
    /// Random, channel k weighted 1/k^s (`--zipf-s`).
    Zipf,
    /// No randomness: client i takes channels i·subs … i·subs+subs−1 (mod channels), so
    /// with clients·subs = channels every channel has exactly one subscriber.
    Spread,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SlowMode {
    /// Stop reading after subscribing (until the run ends).
    Stop,
    /// Read at `--slow-fraction` of the client's expected frame rate.
    Fraction,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    Json,
    Msgpack,
}

/// Wire protocol of the simulated subscribers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Dialect {
    /// quotecast's own protocol on `/ws` (`subscribe` ops, `seq` checked per channel).
    V1,
    /// Pusher Channels protocol 7: `--url` is `ws://HOST:PORT/app/{key}?protocol=7`, one
    /// `pusher:subscribe` per channel, events `{"event","channel","data":"<JSON string>"}`.
    /// Pusher frames carry no `seq`: deliveries are counted, order and gaps are not checked.
    Pusher,
}

/// How the publishers publish.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum PublishApi {
    /// quotecast's WebSocket `publish` op on the publish URL (`ws://HOST:PORT/ws`).
    Ws,
    /// Pusher's HTTP API, signed: `POST /apps/{app-id}/batch_events` (at most `--batch`
    /// events per request, Pusher's limit is 10) on the publish URL's host and port.
    PusherHttp,
}

#[derive(Args, Debug)]
pub(crate) struct RunArgs {
    /// Named scenario supplying defaults; any flag overrides.
    #[arg(long, value_enum, default_value = "custom")]
    pub(crate) scenario: Scenario,
    /// Server URL (127.0.0.1 / localhost only), e.g. ws://127.0.0.1:8080/ws. A
    /// comma-separated list spreads the subscribers round-robin over several servers
    /// (cluster nodes).
    #[arg(long)]
    pub(crate) url: Option<String>,
    /// Where the publishers connect (default: the `--url` list). A comma-separated list
    /// spreads the publishers round-robin; e.g. another cluster node than the subscribers'
    /// to measure cross-node delivery.
    #[arg(long)]
    pub(crate) publish_url: Option<String>,
    /// Start this server binary as `PATH serve --listen 127.0.0.1:0 [spawn-args]`.
    #[arg(long)]
    pub(crate) spawn: Option<PathBuf>,
    /// Extra argument for the spawned server (repeatable).
    #[arg(long = "spawn-arg", allow_hyphen_values = true)]
    pub(crate) spawn_args: Vec<String>,
    /// Write the spawned server's stderr to this file (default: discarded).
    #[arg(long)]
    pub(crate) server_log: Option<PathBuf>,
    /// PID of an external server, to sample its RSS and CPU.
    #[arg(long)]
    pub(crate) server_pid: Option<u32>,
    /// Run name used in the results (default: the scenario name).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Write results JSON here; the plot goes next to it as NAME-latency.svg.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Tokio worker threads of the loadtest.
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    #[arg(long)]
    pub(crate) clients: Option<usize>,
    /// New connections per second (0 = as fast as possible).
    #[arg(long)]
    pub(crate) connect_rate: Option<f64>,
    /// Upgrades in flight at once (0 = unlimited).
    #[arg(long)]
    pub(crate) max_inflight_connects: Option<usize>,
    /// Channels bench.0 .. bench.N-1.
    #[arg(long)]
    pub(crate) channels: Option<usize>,
    /// Subscriptions per client.
    #[arg(long)]
    pub(crate) subs: Option<usize>,
    #[arg(long, value_enum)]
    pub(crate) popularity: Option<Popularity>,
    /// Zipf exponent for `--popularity zipf`.
    #[arg(long)]
    pub(crate) zipf_s: Option<f64>,
    /// Events per second, all publishers together (0 = no publishing).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Events per publish op.
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    #[arg(long)]
    pub(crate) publishers: Option<usize>,
    /// Approximate size of each event's `data` object in bytes.
    #[arg(long)]
    pub(crate) payload_bytes: Option<usize>,
    /// Measured seconds (after warm-up).
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// Warm-up seconds of publishing before measuring.
    #[arg(long)]
    pub(crate) warmup: Option<f64>,
    /// Share of clients that are slow (0..1).
    #[arg(long)]
    pub(crate) slow_share: Option<f64>,
    #[arg(long, value_enum)]
    pub(crate) slow_mode: Option<SlowMode>,
    /// For `--slow-mode fraction`: read at this fraction of the expected rate.
    #[arg(long)]
    pub(crate) slow_fraction: Option<f64>,
    #[arg(long, value_enum)]
    pub(crate) format: Option<Format>,
    /// Per-connection read buffer in bytes.
    #[arg(long)]
    pub(crate) read_buf: Option<usize>,
    /// SO_RCVBUF of normal clients in bytes (the kernel doubles it); 0 leaves the kernel's
    /// autotuning, which lets a lagging load tester hold megabytes per socket on loopback.
    #[arg(long)]
    pub(crate) rcvbuf: Option<usize>,
    /// Seconds allowed for connecting and subscribing everyone.
    #[arg(long)]
    pub(crate) connect_timeout: Option<f64>,
    /// Seconds to wait for in-flight events after publishing stops.
    #[arg(long)]
    pub(crate) drain: Option<f64>,
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Subscribers' protocol.
    #[arg(long, value_enum)]
    pub(crate) dialect: Option<Dialect>,
    /// Publishers' API (`pusher-http` needs `--app-id`, `--app-key` and the secret).
    #[arg(long, value_enum)]
    pub(crate) publish_api: Option<PublishApi>,
    /// Pusher app id for `--publish-api pusher-http`.
    #[arg(long, default_value = "1001")]
    pub(crate) app_id: String,
    /// Pusher app key for `--publish-api pusher-http`.
    #[arg(long, default_value = "app-key")]
    pub(crate) app_key: String,
    /// Environment variable holding the Pusher app secret for `--publish-api pusher-http`.
    #[arg(long, default_value = "PUSHER_APP_SECRET")]
    pub(crate) app_secret_env: String,
}

/// Fully resolved run parameters (also written into the results JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) scenario: Scenario,
    pub(crate) name: String,
    pub(crate) threads: usize,
    pub(crate) clients: usize,
    pub(crate) connect_rate: f64,
    pub(crate) max_inflight_connects: usize,
    pub(crate) channels: usize,
    pub(crate) subs: usize,
    pub(crate) popularity: Popularity,
    pub(crate) zipf_s: f64,
    pub(crate) rate: f64,
    pub(crate) batch: usize,
    pub(crate) publishers: usize,
    pub(crate) payload_bytes: usize,
    pub(crate) duration: f64,
    pub(crate) warmup: f64,
    pub(crate) slow_share: f64,
    pub(crate) slow_mode: SlowMode,
    pub(crate) slow_fraction: f64,
    pub(crate) format: Format,
    pub(crate) read_buf: usize,
    pub(crate) rcvbuf: usize,
    pub(crate) connect_timeout: f64,
    pub(crate) drain: f64,
    pub(crate) seed: u64,
    /// Absent from results written before the Pusher dialect: v1.
    #[serde(default = "v1")]
    pub(crate) dialect: Dialect,
    #[serde(default = "ws_api")]
    pub(crate) publish_api: PublishApi,
}

fn v1() -> Dialect {
    Dialect::V1
}

fn ws_api() -> PublishApi {
    PublishApi::Ws
}

impl Settings {
    fn defaults(scenario: Scenario) -> Settings {
        let mut s = Settings {
            scenario,
            name: scenario_name(scenario).to_string(),
            threads: 1,
            clients: 100,
            connect_rate: 0.0,
            max_inflight_connects: 1024,
            channels: 10,
            subs: 1,
            popularity: Popularity::Uniform,
            zipf_s: 1.0,
            rate: 1000.0,
            batch: 10,
            publishers: 1,
            payload_bytes: 64,
            duration: 10.0,
            warmup: 2.0,
            slow_share: 0.0,
            slow_mode: SlowMode::Stop,
            slow_fraction: 0.1,
            format: Format::Json,
            read_buf: 16 * 1024,
            rcvbuf: 0,
            connect_timeout: 60.0,
            drain: 5.0,
            seed: 1,
            dialect: Dialect::V1,
            publish_api: PublishApi::Ws,
        };
        let market = |s: &mut Settings| {
            s.clients = 10_000;
            s.channels = 1_000;
            s.subs = 10;
            s.popularity = Popularity::Zipf;
            s.rate = 10_000.0;
            s.batch = 50;
            s.read_buf = 8 * 1024;
        };
        match scenario {
            Scenario::Custom => {}
            Scenario::Broadcast => {
                s.clients = 1_000;
                s.channels = 1;
                s.rate = 1_000.0;
            }
            Scenario::Market => market(&mut s),
            Scenario::Idle => {
                market(&mut s);
                s.rate = 0.0;
                s.duration = 5.0;
                s.warmup = 0.0;
            }
            Scenario::ConnectStorm => {
                s.clients = 10_000;
                s.channels = 1_000;
                s.subs = 1;
                s.rate = 0.0;
                s.duration = 1.0;
                s.warmup = 0.0;
                s.max_inflight_connects = 0;
                s.read_buf = 4 * 1024;
            }
            Scenario::SlowConsumers => {
                market(&mut s);
                s.slow_share = 0.1;
            }
            Scenario::Msgpack => {
                market(&mut s);
                s.format = Format::Msgpack;
            }
            Scenario::Smoke => {
                s.clients = 50;
                s.channels = 10;
                s.subs = 3;
                s.rate = 2_000.0;
                s.duration = 3.0;
                s.warmup = 1.0;
                s.connect_timeout = 20.0;
            }
        }
        s
    }

    pub(crate) fn resolve(a: &RunArgs) -> Result<Settings> {
        let mut s = Settings::defaults(a.scenario);
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = a.$f.clone() { s.$f = v; } )* };
        }
        over!(
            name,
            threads,
            clients,
            connect_rate,
            max_inflight_connects,
            channels,
            subs
        );
        over!(
            popularity,
            zipf_s,
            rate,
            batch,
            publishers,
            payload_bytes,
            duration,
            warmup
        );
        over!(
            slow_share,
            slow_mode,
            slow_fraction,
            format,
            read_buf,
            rcvbuf,
            connect_timeout,
            drain,
            seed,
            dialect,
            publish_api
        );
        if s.threads == 0 || s.clients == 0 || s.channels == 0 || s.subs == 0 {
            bail!("--threads, --clients, --channels and --subs must be at least 1");
        }
        s.subs = s.subs.min(s.channels);
        s.batch = s.batch.clamp(1, 1024);
        s.publishers = s.publishers.clamp(1, s.channels);
        if !(0.0..=1.0).contains(&s.slow_share)
            || s.slow_fraction.is_nan()
            || s.slow_fraction <= 0.0
        {
            bail!("--slow-share must be in 0..=1 and --slow-fraction > 0");
        }
        if [s.duration, s.warmup, s.rate, s.connect_rate]
            .iter()
            .any(|v| v.is_nan() || *v < 0.0)
        {
            bail!("durations and rates must be non-negative");
        }
        if s.duration + s.warmup > 3600.0 {
            bail!("runs are bounded to one hour");
        }
        s.read_buf = s.read_buf.max(1024);
        if s.dialect == Dialect::Pusher && s.format != Format::Json {
            bail!("--dialect pusher is JSON only");
        }
        Ok(s)
    }
}

pub(crate) fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::Custom => "custom",
        Scenario::Broadcast => "broadcast",
        Scenario::Market => "market",
        Scenario::Idle => "idle",
        Scenario::ConnectStorm => "connect-storm",
        Scenario::SlowConsumers => "slow-consumers",
        Scenario::Msgpack => "msgpack",
        Scenario::Smoke => "smoke",
    }
}

/// A validated loopback target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: std::net::SocketAddr,
    /// Value of the Host header.
    pub(crate) host: String,
    /// Request path including any query.
    pub(crate) path: String,
}

/// Parses `ws://HOST:PORT/PATH`, accepting only 127.0.0.1, localhost and [::1].
pub(crate) fn parse_url(url: &str) -> Result<Target> {
    let rest = url
        .strip_prefix("ws://")
        .context("only ws:// URLs are supported")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/ws"),
    };
    let (host, port) = hostport
        .rsplit_once(':')
        .context("URL needs an explicit port")?;
    let port: u16 = port.parse().context("bad port")?;
    let ip: std::net::IpAddr = match host {
        "127.0.0.1" | "localhost" => [127, 0, 0, 1].into(),
        "[::1]" => std::net::Ipv6Addr::LOCALHOST.into(),
        other => bail!(
            "refusing non-loopback target {other}: the loadtest only targets 127.0.0.1/localhost"
        ),
    };
    Ok(Target {
        addr: (ip, port).into(),
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

/// Parses a comma-separated list of URLs (at least one), each as in [`parse_url`].
pub(crate) fn parse_urls(list: &str) -> Result<Vec<Target>> {
    let targets = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| parse_url(u).with_context(|| format!("URL {u:?}")))
        .collect::<Result<Vec<_>>>()?;
    if targets.is_empty() {
        bail!("empty URL list");
    }
    Ok(targets)
}

/// Subscriber and publisher targets: `publish_url` defaults to the subscribers' list.
/// Client `i` connects to `subs[i % subs.len()]`, publisher `p` to `pubs[p % pubs.len()]`.
pub(crate) fn parse_targets(
    url: &str,
    publish_url: Option<&str>,
) -> Result<(Vec<Target>, Vec<Target>)> {
    let subs = parse_urls(url).context("--url")?;
    let pubs = match publish_url {
        Some(p) => parse_urls(p).context("--publish-url")?,
        None => subs.clone(),
    };
    Ok((subs, pubs))
}

#[cfg(test)]
impl RunArgs {
    /// Parses `loadtest run ARGS…` for unit tests.
    pub(crate) fn parse_for_test(args: &[&str]) -> RunArgs {
        let argv = ["loadtest", "run"].iter().chain(args).copied();
        match Cli::parse_from(argv).cmd {
            Cmd::Run(a) => *a,
            Cmd::Plot { .. } => unreachable!("parsed a run command"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_rules() {
        let t = parse_url("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (8080, "/ws"));
        assert_eq!(parse_url("ws://localhost:9").unwrap().path, "/ws");
        assert!(parse_url("ws://10.0.0.1:80/ws").is_err());
        assert!(parse_url("wss://127.0.0.1:80/ws").is_err());
    }

    #[test]
    fn url_lists() {
        let one = parse_urls("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(one.len(), 1);
        let two = parse_urls("ws://127.0.0.1:1/ws, ws://localhost:2/a,").unwrap();
        let ports: Vec<u16> = two.iter().map(|t| t.addr.port()).collect();
        assert_eq!(ports, [1, 2]);
        assert_eq!((two[0].path.as_str(), two[1].path.as_str()), ("/ws", "/a"));
        assert_eq!(two[1].host, "localhost:2");
        assert!(parse_urls("").is_err());
        assert!(parse_urls(" , ").is_err());
        assert!(parse_urls("ws://127.0.0.1:1/ws,ws://10.0.0.1:2/ws").is_err());
        let a = RunArgs::parse_for_test(&[
            "--url",
            "ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
            "--publish-url",
            "ws://127.0.0.1:3/ws",
        ]);
        assert_eq!(
            a.url.as_deref(),
            Some("ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws")
        );
        assert_eq!(a.publish_url.as_deref(), Some("ws://127.0.0.1:3/ws"));
        assert!(RunArgs::parse_for_test(&[]).publish_url.is_none());
        let (subs, pubs) = parse_targets("ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws", None).unwrap();
        assert_eq!((subs.len(), pubs.len()), (2, 2));
        assert_eq!(pubs[1].addr.port(), 2);
        let (subs, pubs) =
            parse_targets("ws://127.0.0.1:1/ws", Some("ws://127.0.0.1:3/ws")).unwrap();
        assert_eq!((subs[0].addr.port(), pubs[0].addr.port()), (1, 3));
        assert!(parse_targets("ws://127.0.0.1:1/ws", Some("http://x")).is_err());
    }
}
