//! Operational statistics (pure, beside the pipeline): the [`ShardSnapshot`] each shard
//! answers a `ShardMsg::Stats` with, the Prometheus text exposition of the merged
//! snapshots (`GET /metrics`), process figures read from `/proc/self`, and a small parser
//! of the exposition format that the tests use to check what is served.
//!
//! Nothing here is on the publish → socket path: shards keep plain counters
//! ([`crate::engine::stats::ShardStats`]) and copy them into a snapshot when asked, on
//! their own thread, through the same lock-free inboxes as every other message.
//!
//! The text format is written by hand: the merged snapshot is a handful of families,
//! `prometheus-client` would want its own registry of atomics per scrape, and a unit test
//! below checks the output against the format's rules.

use std::collections::BTreeSet;
use std::fmt::Write as _;

pub use crate::engine::stats::{ShardSnapshot, LATENCY_BUCKETS_NS};

use crate::protocol::CloseCode;

/// Server-wide figures that do not come from a shard.
#[derive(Debug, Clone, Default)]
pub struct ServerFigures {
    /// Seconds since the server started.
    pub uptime_secs: f64,
    /// Open sockets, HTTP and WebSocket.
    pub open_sockets: usize,
    /// Distinct authenticated users with a connection open.
    pub unique_users: usize,
    /// Shutdown has begun.
    pub shutting_down: bool,
    /// Process figures, where `/proc` is readable.
    pub process: Option<ProcessFigures>,
}

/// Sums shard snapshots (missing shards, which did not answer, are skipped).
pub fn merge(snaps: &[Option<ShardSnapshot>]) -> ShardSnapshot {
    let mut m = ShardSnapshot {
        latency_buckets: vec![0; LATENCY_BUCKETS_NS.len()],
        ..ShardSnapshot::default()
    };
    for s in snaps.iter().flatten() {
        m.stats.merge(&s.stats);
        m.connections += s.connections;
        m.subscriptions += s.subscriptions;
        m.channels += s.channels;
        m.ring_events += s.ring_events;
        m.inbox_depth += s.inbox_depth;
        m.backlog += s.backlog;
        for (a, b) in m.latency_buckets.iter_mut().zip(&s.latency_buckets) {
            *a += b;
        }
        m.latency_count += s.latency_count;
        m.top_channels.extend(s.top_channels.iter().cloned());
    }
    // Every channel has one home shard, so the global top N is among the shards' top N.
    m.top_channels
        .sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    m
}

// ---- Prometheus text exposition -------------------------------------------------------

/// Writes the text exposition format (version 0.0.4).
struct Expo {
    out: String,
}

impl Expo {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn per_kind(&mut self, name: &str, help: &str, v: &crate::engine::stats::PerKind) {
        self.family(name, "counter", help);
        self.sample(name, &[("kind", "conflated")], v.conflated);
        self.sample(name, &[("kind", "stream")], v.stream);
    }
}

/// The Prometheus text exposition of the server: `snaps[i]` is shard `i`'s answer, `None`
/// if it did not answer in time.
pub fn render(server: &ServerFigures, snaps: &[Option<ShardSnapshot>]) -> String {
    let m = merge(snaps);
    let s = &m.stats;
    let mut e = Expo {
        out: String::with_capacity(8 * 1024),
    };
    e.family(
        "quotecast_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    e.sample(
        "quotecast_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.one(
        "quotecast_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        format_args!("{:.3}", server.uptime_secs),
    );
    e.one(
        "quotecast_shutting_down",
        "gauge",
        "1 once graceful shutdown has begun.",
        server.shutting_down as u8,
    );
    e.one(
        "quotecast_connections",
        "gauge",
        "Open WebSocket connections.",
        m.connections,
    );
    e.one(
        "quotecast_open_sockets",
        "gauge",
        "Open sockets, HTTP and WebSocket.",
        server.open_sockets,
    );
    e.one(
        "quotecast_unique_users",
        "gauge",
        "Distinct authenticated users with a connection open.",
        server.unique_users,
    );
    e.one(
        "quotecast_connects_total",
        "counter",
        "WebSocket connections opened.",
        s.connects,
    );
    e.family(
        "quotecast_disconnects_total",
        "counter",
        "WebSocket connections closed, by close code (code 0: a client code outside the protocol's).",
    );
    for (code, n) in &s.disconnects {
        let reason = CloseCode::from_code(*code).label();
        let code = code.to_string();
        e.sample(
            "quotecast_disconnects_total",
            &[("code", &code), ("reason", reason)],
            n,
        );
    }
    e.one(
        "quotecast_connections_refused_total",
        "counter",
        "Connections refused at the max_connections cap.",
        s.refused_connections,
    );
    e.family(
        "quotecast_rate_limit_hits_total",
        "counter",
        "Client ops refused by the per-connection limit (scope ops) and connections refused by the per-IP limit (scope connect).",
    );
    e.sample(
        "quotecast_rate_limit_hits_total",
        &[("scope", "ops")],
        s.rate_limited_ops,
    );
    e.sample(
        "quotecast_rate_limit_hits_total",
        &[("scope", "connect")],
        s.rate_limited_connects,
    );
    e.family(
        "quotecast_auth_failures_total",
        "counter",
        "Tokens or API keys refused, by where they were presented.",
    );
    for (stage, n) in [
        ("connect", s.auth_failures.connect),
        ("auth_op", s.auth_failures.auth_op),
        ("http", s.auth_failures.http),
    ] {
        e.sample("quotecast_auth_failures_total", &[("stage", stage)], n);
    }
    e.per_kind(
        "quotecast_messages_in_total",
        "Events published (sequenced), by channel kind.",
        &s.messages_in,
    );
    e.per_kind(
        "quotecast_bytes_in_total",
        "Payload bytes of events published, by channel kind.",
        &s.bytes_in,
    );
    e.per_kind(
        "quotecast_messages_out_total",
        "Event frames handed to subscribers (queues or conflation slots), by channel kind.",
        &s.messages_out,
    );
    e.per_kind(
        "quotecast_bytes_out_total",
        "Bytes of event frames handed to subscribers, by channel kind.",
        &s.bytes_out,
    );
    e.one(
        "quotecast_conflated_total",
        "counter",
        "Quotes replaced by a newer one before being written to a slow subscriber.",
        s.conflated,
    );
    e.family(
        "quotecast_slow_consumer_closes_total",
        "counter",
        "Connections closed as slow consumers (4008), by trigger: lag (the oldest unsent \
         stream event waited past slow_consumer_lag_ms) or memory (the queue reached its \
         hard frame or byte cap).",
    );
    for (trigger, n) in [("lag", s.slow_closes.lag), ("memory", s.slow_closes.memory)] {
        e.sample(
            "quotecast_slow_consumer_closes_total",
            &[("trigger", trigger)],
            n,
        );
    }
    e.one(
        "quotecast_subscriptions",
        "gauge",
        "Channel subscriptions held by all connections.",
        m.subscriptions,
    );
    e.one(
        "quotecast_channels",
        "gauge",
        "Channels with state (published to or subscribed).",
        m.channels,
    );
    e.one(
        "quotecast_ring_events",
        "gauge",
        "Events retained in channel history rings (snapshots and recovery).",
        m.ring_events,
    );
    let h = "quotecast_delivery_latency_seconds";
    e.family(
        h,
        "histogram",
        "Ingest to socket write latency of event batches.",
    );
    for (le, n) in LATENCY_BUCKETS_NS.iter().zip(&m.latency_buckets) {
        let le = (*le as f64 / 1e9).to_string();
        e.sample(&format!("{h}_bucket"), &[("le", &le)], n);
    }
    e.sample(&format!("{h}_bucket"), &[("le", "+Inf")], m.latency_count);
    e.sample(
        &format!("{h}_sum"),
        &[],
        format_args!("{:.9}", s.latency_sum_ns as f64 / 1e9),
    );
    e.sample(&format!("{h}_count"), &[], m.latency_count);
    let per_shard = |e: &mut Expo, name: &str, help: &str, f: &dyn Fn(&ShardSnapshot) -> u64| {
        e.family(name, "gauge", help);
        for (i, sn) in snaps.iter().enumerate() {
            if let Some(sn) = sn {
                e.sample(name, &[("shard", &i.to_string())], f(sn));
            }
        }
    };
    e.family(
        "quotecast_shard_up",
        "gauge",
        "1 if the shard answered the scrape within 1 s.",
    );
    for (i, sn) in snaps.iter().enumerate() {
        e.sample(
            "quotecast_shard_up",
            &[("shard", &i.to_string())],
            sn.is_some() as u8,
        );
    }
    per_shard(
        &mut e,
        "quotecast_shard_connections",
        "WebSocket connections served by each shard (balance).",
        &|s| s.connections as u64,
    );
    per_shard(
        &mut e,
        "quotecast_shard_inbox_depth",
        "Messages waiting in each shard's inbox.",
        &|s| s.inbox_depth as u64,
    );
    per_shard(
        &mut e,
        "quotecast_shard_backlog",
        "Work items each shard holds for other shards whose inboxes were full.",
        &|s| s.backlog as u64,
    );
    if let Some(p) = &server.process {
        e.one(
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent, seconds.",
            format_args!("{:.2}", p.cpu_seconds),
        );
        e.one(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size, bytes.",
            p.resident_bytes,
        );
        e.one(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size, bytes.",
            p.virtual_bytes,
        );
        e.one(
            "process_open_fds",
            "gauge",
            "Open file descriptors.",
            p.open_fds,
        );
        e.one(
            "process_max_fds",
            "gauge",
            "Limit on open file descriptors.",
            p.max_fds,
        );
        e.one("process_threads", "gauge", "OS threads.", p.threads);
        e.one(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, seconds.",
            format_args!("{:.2}", p.start_time_secs),
        );
    }
    e.out
}

// ---- process figures ----------------------------------------------------------------

/// What `/proc/self` says about this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessFigures {
    /// User + system CPU, seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft open-file limit.
    pub max_fds: u64,
    /// OS threads.
    pub threads: u64,
    /// Process start, seconds since the Unix epoch.
    pub start_time_secs: f64,
}

impl ProcessFigures {
    /// Reads `/proc/self/stat`, `/proc/self/fd` and `/proc/stat`; `None` off Linux.
    pub fn read() -> Option<ProcessFigures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = &stat[stat.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        // Field numbers from proc(5), minus 3 (pid, comm, and 1-based).
        let (utime, stime) = (num(11)?, num(12)?);
        let threads = num(17)?;
        let start_ticks = num(19)?;
        let vsize = num(20)?;
        let rss_pages = num(21)?;
        // SAFETY: sysconf only reads system constants; it has no memory effects.
        let (tck, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let tck = if tck > 0 { tck as f64 } else { 100.0 };
        let page = if page > 0 { page as u64 } else { 4096 };
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `lim`, which lives on this stack frame.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            lim.rlim_cur
        } else {
            0
        };
        let btime = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        Some(ProcessFigures {
            cpu_seconds: (utime + stime) as f64 / tck,
            resident_bytes: rss_pages * page,
            virtual_bytes: vsize,
            open_fds,
            max_fds,
            threads,
            start_time_secs: btime as f64 + start_ticks as f64 / tck,
        })
    }
}

// ---- a parser, for tests ------------------------------------------------------------

/// One sample of a parsed exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// The value of label `k`.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// Parses and checks a Prometheus text exposition: line grammar, a `# TYPE` before every
/// family's samples, one `# TYPE` per family, counters named `_total`, label escaping, and
/// histogram buckets that are cumulative and end in `+Inf` equal to `_count`. For the
/// tests and for tools; the server never parses metrics.
pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut samples = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let err = |m: &str| Err(format!("line {}: {m}: {line}", no + 1));
        if line.is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix("# ") {
            let mut parts = c.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !valid_name(name) {
                        return err("bad metric name");
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return err("unknown type");
                    }
                    if kind == "counter" && !name.ends_with("_total") {
                        return err("counter not named _total");
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return err("second TYPE for a family");
                    }
                }
                (Some("HELP"), Some(name), _) if valid_name(name) => {}
                _ => return err("bad comment"),
            }
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => return err("no value"),
        };
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse() {
                Ok(v) => v,
                Err(_) => return err("bad value"),
            },
        };
        let (name, labels) = match head.split_once('{') {
            None => (head, Vec::new()),
            Some((name, rest)) => {
                let Some(body) = rest.strip_suffix('}') else {
                    return err("unterminated labels");
                };
                let mut labels = Vec::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    if !valid_name(&key) || chars.next() != Some('"') {
                        return err("bad label");
                    }
                    let mut val = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some('n') => val.push('\n'),
                                Some(c @ ('\\' | '"')) => val.push(c),
                                _ => return err("bad escape"),
                            },
                            Some(c) => val.push(c),
                            None => return err("unterminated label value"),
                        }
                    }
                    labels.push((key, val));
                    match chars.next() {
                        None | Some(',') => {}
                        Some(_) => return err("junk after label"),
                    }
                }
                (name, labels)
            }
        };
        if !valid_name(name) {
            return err("bad metric name");
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                name.strip_suffix(suf)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return err("sample before its # TYPE");
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets ending in +Inf == _count.
    let hists: BTreeSet<&String> = types
        .iter()
        .filter(|(_, t)| *t == "histogram")
        .map(|(n, _)| n)
        .collect();
    for h in hists {
        let bucket = format!("{h}_bucket");
        let mut last = -1.0f64;
        let mut inf = None;
        for s in samples.iter().filter(|s| s.name == bucket) {
            if s.value < last {
                return Err(format!("{h}: buckets not cumulative"));
            }
            last = s.value;
            if s.label("le") == Some("+Inf") {
                inf = Some(s.value);
            }
        }
        let count = samples
            .iter()
            .find(|s| s.name == format!("{h}_count"))
            .map(|s| s.value);
        if inf.is_none() || inf != count {
            return Err(format!("{h}: +Inf bucket missing or not equal to _count"));
        }
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn snapshot(shard: usize) -> ShardSnapshot {
        let mut s = ShardSnapshot {
            shard,
            connections: 3,
            latency_buckets: vec![0; LATENCY_BUCKETS_NS.len()],
            top_channels: vec![(Arc::from("quotes.\"odd\"\\name"), 2)],
            ..ShardSnapshot::default()
        };
        s.stats.connects = 5;
        s.stats.count_disconnect(CloseCode::SlowConsumer);
        s.stats.count_disconnect(CloseCode::Other(3999));
        s.stats.messages_out.stream = 7;
        for (i, b) in s.latency_buckets.iter_mut().enumerate() {
            *b = 10 + i as u64;
        }
        s.latency_count = 40;
        s
    }

    #[test]
    fn the_exposition_parses_and_adds_up() {
        let server = ServerFigures {
            uptime_secs: 12.5,
            process: ProcessFigures::read(),
            ..ServerFigures::default()
        };
        let text = render(&server, &[Some(snapshot(0)), None, Some(snapshot(2))]);
        let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let get = |name: &str, label: Option<(&str, &str)>| {
            samples
                .iter()
                .find(|s| s.name == name && label.is_none_or(|(k, v)| s.label(k) == Some(v)))
                .map(|s| s.value)
        };
        assert_eq!(get("quotecast_connections", None), Some(6.0));
        assert_eq!(get("quotecast_connects_total", None), Some(10.0));
        assert_eq!(
            get("quotecast_disconnects_total", Some(("code", "4008"))),
            Some(2.0)
        );
        assert_eq!(
            get("quotecast_disconnects_total", Some(("reason", "other"))),
            Some(2.0),
            "an unknown client code is counted as other"
        );
        assert_eq!(
            get("quotecast_messages_out_total", Some(("kind", "stream"))),
            Some(14.0)
        );
        assert_eq!(get("quotecast_shard_up", Some(("shard", "1"))), Some(0.0));
        assert_eq!(
            get("quotecast_delivery_latency_seconds_count", None),
            Some(80.0)
        );
        assert_eq!(
            get(
                "quotecast_delivery_latency_seconds_bucket",
                Some(("le", "0.00001"))
            ),
            Some(20.0)
        );
        if cfg!(target_os = "linux") {
            assert!(get("process_resident_memory_bytes", None).unwrap() > 0.0);
        }
    }

    #[test]
    fn the_parser_refuses_what_prometheus_would() {
        assert!(parse_exposition("x 1\n").is_err(), "no TYPE");
        assert!(
            parse_exposition("# TYPE x counter\nx 1\n").is_err(),
            "counter without _total"
        );
        assert!(parse_exposition("# TYPE x gauge\nx{a=\"b} 1\n").is_err());
        assert!(parse_exposition("# TYPE x gauge\nx{a=\"\\q\"} 1\n").is_err());
        let h = "# TYPE h histogram\nh_bucket{le=\"1\"} 5\nh_bucket{le=\"+Inf\"} 4\nh_sum 1\nh_count 4\n";
        assert!(parse_exposition(h).is_err(), "not cumulative");
        let ok = parse_exposition("# TYPE x gauge\nx{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5\n").unwrap();
        assert_eq!(ok[0].label("a"), Some("q\"\\\n"));
    }

    #[test]
    fn merge_keeps_the_global_top_channels() {
        let mut a = snapshot(0);
        a.top_channels = vec![(Arc::from("x"), 9), (Arc::from("y"), 1)];
        let mut b = snapshot(1);
        b.top_channels = vec![(Arc::from("z"), 5)];
        let m = merge(&[Some(a), Some(b)]);
        let names: Vec<&str> = m.top_channels.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["x", "z", "y"]);
    }
}
