//! Operations: configuration precedence (file < environment < flags) with the real binary,
//! configuration errors, `/ready`, `/ws/status`, `/health/websocket`, `/metrics` after real
//! traffic, and the example alerts and dashboard in `deploy/` against a live scrape.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use quotecast::config::RawConfig;
use quotecast::metrics::{parse_exposition, Sample};
use serde_json::{json, Value};

use crate::util::*;

/// Every `QUOTECAST_*` variable the binary reads, removed so that the test's own
/// environment cannot leak into the child.
const ENV_VARS: &[&str] = &[
    "QUOTECAST_CONFIG",
    "QUOTECAST_LISTEN",
    "QUOTECAST_SHARDS",
    "QUOTECAST_DEMO",
    "QUOTECAST_HEARTBEAT_MS",
    "QUOTECAST_ALLOW_ANONYMOUS",
    "QUOTECAST_JWT_SECRET",
    "QUOTECAST_API_KEYS",
];

fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("quotecast-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn binary(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quotecast"));
    cmd.args(args);
    for v in ENV_VARS {
        cmd.env_remove(v);
    }
    cmd.env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// A server process from [`binary`], killed on drop.
struct Proc;

impl Proc {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start(binary(args, env).stderr(Stdio::inherit()))
    }
}

async fn status(addr: SocketAddr) -> Value {
    let (code, body) = http(addr, "GET", "/ws/status", "").await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// What the server tells a client: heartbeat from the welcome, shard count from the status.
async fn observed(addr: SocketAddr) -> (u64, usize) {
    let c = Client::connect_url(&format!("ws://{addr}/ws"), false).await;
    let hb = c.welcome["heartbeat_ms"].as_u64().unwrap();
    let shards = status(addr).await["shards"].as_array().unwrap().len();
    (hb, shards)
}

#[tokio::test]
async fn config_file_then_environment_then_flags_take_precedence() {
    let file = temp_file(
        "precedence.toml",
        "listen = \"127.0.0.1:0\"\nshards = 3\nheartbeat_ms = 1111\n\n[auth]\nallow_anonymous = true\n",
    );
    let f = file.to_str().unwrap();
    // File alone.
    let p = Proc::spawn(&["serve", "--config", f], &[]);
    assert_eq!(observed(p.addr).await, (1111, 3));
    drop(p);
    // The environment beats the file; what it does not set still comes from the file.
    let env = [("QUOTECAST_HEARTBEAT_MS", "2222")];
    let p = Proc::spawn(&["serve", "--config", f], &env);
    assert_eq!(observed(p.addr).await, (2222, 3));
    drop(p);
    // A flag beats both; the config path itself may come from the environment.
    let env = [
        ("QUOTECAST_HEARTBEAT_MS", "2222"),
        ("QUOTECAST_CONFIG", f),
        ("QUOTECAST_SHARDS", "2"),
    ];
    let p = Proc::spawn(&["serve", "--heartbeat-ms", "3333"], &env);
    assert_eq!(observed(p.addr).await, (3333, 2));
    drop(p);
    // A switch in the environment turns off what the file turned on.
    let env = [("QUOTECAST_ALLOW_ANONYMOUS", "false")];
    let p = Proc::spawn(&["serve", "--config", f], &env);
    let mut c = Client::upgrade(format!("ws://{}/ws", p.addr)).await;
    let (_, closed) = c.until_close().await;
    assert_eq!(closed.code, 4001, "{closed:?}");
}

#[tokio::test]
async fn an_invalid_config_file_fails_at_start_with_file_line_and_reason() {
    let cases = [
        (
            "type.toml",
            "listen = \"127.0.0.1:0\"\n\nshards = \"three\"\n",
            ":3:10: ",
            "invalid type: string \"three\", expected usize",
        ),
        (
            "unknown.toml",
            "[queue]\nmax_frame = 100\n",
            ":2:1: ",
            "max_frame",
        ),
        (
            "range.toml",
            "listen = \"127.0.0.1:0\"\n[queue]\nmax_frames = 2\n",
            ":3:1: ",
            "queue.max_frames: must be at least 16",
        ),
        (
            "pattern.toml",
            "[[channels]]\npattern = \"a.***\"\n",
            ":1:1: ",
            "`***`: use `*` (one segment) or `**` (the rest)",
        ),
        ("syntax.toml", "shards = 4\nlisten = \n", ":2:", "string"),
    ];
    for (name, text, at, why) in cases {
        let file = temp_file(name, text);
        let out = binary(&["serve", "--config", file.to_str().unwrap()], &[])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        let want = format!("{}{at}", file.display());
        assert!(err.contains(&want), "{name}: want {want:?} in {err}");
        assert!(err.contains(why), "{name}: want {why:?} in {err}");
        assert!(out.stdout.is_empty(), "{name}: started anyway");
        // `config --check` says the same.
        let out = binary(&["config", "--check", file.to_str().unwrap()], &[])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains(&want));
    }
}

#[tokio::test]
async fn print_default_parses_back_to_the_defaults() {
    let out = binary(&["config", "--print-default"], &[])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let raw = RawConfig::parse(&text, "stdout").unwrap();
    assert_eq!(raw, RawConfig::default());
    // Every option is documented: each key line follows a comment or another key.
    assert!(text.lines().filter(|l| l.starts_with('#')).count() > 60);
    let file = temp_file("default.toml", &text);
    let out = binary(&["config", "--check", file.to_str().unwrap()], &[])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (code, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(code, 200, "{body}");
    parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && labels.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// Polls `/metrics` until `ok` holds (counters of closing connections settle a moment
/// after the client sees the close).
async fn scrape_until(addr: SocketAddr, ok: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let s = scrape(addr).await;
        if ok(&s) || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn padded(i: usize) -> Value {
    json!({"n": i, "pad": "x".repeat(2000)})
}

#[tokio::test]
async fn metrics_move_with_real_traffic() {
    let srv = TestServer::start(|c| {
        c.shards = 2;
        c.queue = quotecast::engine::outbound::QueueLimits {
            max_frames: 64,
            max_bytes: 64 * 1024,
            max_lag: Duration::from_secs(60),
        };
    });
    let before = scrape(srv.addr).await;
    assert_eq!(value(&before, "quotecast_connections", &[]), 0.0);
    assert_eq!(value(&before, "quotecast_shard_up", &[]), 2.0);

    // A reader that keeps up: stream and conflated messages out.
    let mut fast = Client::connect(&srv).await;
    fast.subscribe(&["trades.M", "quotes.M"]).await;
    publish_http(
        srv.addr,
        &[
            ev("trades.M", "trade", json!({"px": 1})),
            ev("trades.M", "trade", json!({"px": 2})),
            ev("quotes.M", "quote", json!({"bid": 1})),
        ],
    )
    .await;
    for _ in 0..3 {
        fast.expect_type("event").await;
    }
    let s = scrape(srv.addr).await;
    assert_eq!(value(&s, "quotecast_connections", &[]), 1.0);
    assert!(value(&s, "quotecast_connects_total", &[]) >= 1.0);
    assert_eq!(
        value(&s, "quotecast_messages_in_total", &[("kind", "stream")]),
        2.0
    );
    assert_eq!(
        value(&s, "quotecast_messages_out_total", &[("kind", "stream")]),
        2.0
    );
    assert_eq!(
        value(&s, "quotecast_messages_out_total", &[("kind", "conflated")]),
        1.0
    );
    assert!(value(&s, "quotecast_bytes_out_total", &[("kind", "stream")]) > 20.0);
    assert!(value(&s, "quotecast_delivery_latency_seconds_count", &[]) >= 1.0);
    assert!(value(&s, "quotecast_ring_events", &[]) >= 3.0);
    assert_eq!(value(&s, "quotecast_subscriptions", &[]), 2.0);

    // A quote reader that does not read: its quotes are conflated.
    let mut slow_quotes = Client::connect_small_rcvbuf(&srv).await;
    slow_quotes.subscribe(&["quotes.SLOW"]).await;
    for chunk in (0..3000).collect::<Vec<_>>().chunks(100) {
        let evs: Vec<Value> = chunk
            .iter()
            .map(|&i| ev("quotes.SLOW", "quote", padded(i)))
            .collect();
        publish_http(srv.addr, &evs).await;
    }
    // Counted when the fan-out reaches the reader's shard, which may trail the publish acks.
    let s = scrape_until(srv.addr, |s| {
        value(s, "quotecast_conflated_total", &[]) > 0.0
    })
    .await;
    assert!(
        value(&s, "quotecast_conflated_total", &[]) > 0.0,
        "quotes to a reader that does not read are conflated"
    );
    assert_eq!(value(&s, "quotecast_slow_consumer_closes_total", &[]), 0.0);

    // A stream reader that does not read: closed as a slow consumer (4008).
    let mut slow_trades = Client::connect_small_rcvbuf(&srv).await;
    slow_trades.subscribe(&["trades.SLOW"]).await;
    for chunk in (0..1000).collect::<Vec<_>>().chunks(100) {
        let evs: Vec<Value> = chunk
            .iter()
            .map(|&i| ev("trades.SLOW", "trade", padded(i)))
            .collect();
        publish_http(srv.addr, &evs).await;
    }
    let (_, closed) = slow_trades.until_close().await;
    assert_eq!(closed.code, 4008);
    let s = scrape_until(srv.addr, |s| {
        value(s, "quotecast_disconnects_total", &[("code", "4008")]) >= 1.0
    })
    .await;
    assert_eq!(value(&s, "quotecast_slow_consumer_closes_total", &[]), 1.0);
    assert_eq!(
        value(
            &s,
            "quotecast_slow_consumer_closes_total",
            &[("trigger", "memory")]
        ),
        1.0,
        "the 64-frame cap, not the 60 s lag, closed it"
    );
    assert_eq!(
        value(
            &s,
            "quotecast_disconnects_total",
            &[("code", "4008"), ("reason", "slow_consumer")]
        ),
        1.0
    );
    assert_eq!(value(&s, "quotecast_connections", &[]), 2.0);

    // A client that closes normally.
    drop(slow_quotes);
    fast.ws.close(None).await.unwrap();
    let s = scrape_until(srv.addr, |s| {
        value(s, "quotecast_connections", &[]) == 0.0
            && value(s, "quotecast_disconnects_total", &[]) == 3.0
    })
    .await;
    assert_eq!(value(&s, "quotecast_connections", &[]), 0.0);
    assert_eq!(value(&s, "quotecast_connects_total", &[]), 3.0);
    assert_eq!(value(&s, "quotecast_disconnects_total", &[]), 3.0);
}

#[tokio::test]
async fn auth_failures_and_rate_limits_are_counted() {
    let srv = TestServer::start(|c| {
        c.access.allow_anonymous = true;
        c.access.anonymous_publish = false;
        c.access.jwt.hs256_secret = Some(b"metrics-secret".to_vec());
        c.access.ops_per_sec = 1.0;
        c.access.ops_burst = 1.0;
    });
    let mut bad = Client::upgrade(srv.url("?token=not.a.jwt")).await;
    let _ = bad.until_close().await;
    let (code, _) = http_with(
        srv.addr,
        "POST",
        "/api/publish",
        &[("X-Api-Key", "wrong")],
        "{}",
    )
    .await;
    assert_eq!(code, 401);
    let mut c = Client::connect(&srv).await;
    // In one write, so that no token refills (1/s) between them however slow the machine.
    c.send_batch((0..3).map(|i| json!({"op":"ping","id":i})))
        .await;
    // A burst of one: the first ping is answered, the next two refused.
    c.expect_type("pong").await;
    for _ in 0..2 {
        let e = c.expect_type("error").await;
        assert_eq!(e["code"], "rate_limited", "{e}");
    }
    let s = scrape(srv.addr).await;
    assert_eq!(
        value(&s, "quotecast_auth_failures_total", &[("stage", "connect")]),
        1.0
    );
    assert_eq!(
        value(&s, "quotecast_auth_failures_total", &[("stage", "http")]),
        1.0
    );
    assert!(value(&s, "quotecast_rate_limit_hits_total", &[("scope", "ops")]) >= 2.0);
}

#[tokio::test]
async fn status_counts_connections_users_channels_and_shards() {
    let srv = TestServer::start(|c| c.shards = 3);
    let (code, body) = http(srv.addr, "GET", "/ready", "").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let mut clients = Vec::new();
    for i in 0..4 {
        let mut c = Client::connect(&srv).await;
        if i < 3 {
            c.subscribe(&["quotes.POP"]).await;
        }
        if i == 0 {
            c.subscribe(&["trades.RARE"]).await;
        }
        clients.push(c);
    }
    let st = status(srv.addr).await;
    assert_eq!(st["status"], "healthy");
    assert_eq!(st["activeConnections"], 4);
    assert_eq!(st["uniqueUsers"], 0, "anonymous connections are not users");
    assert!(st["uptime"].as_u64().is_some());
    let shards = st["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 3);
    let per_shard: u64 = shards
        .iter()
        .map(|s| s["connections"].as_u64().unwrap())
        .sum();
    assert_eq!(per_shard, 4);
    assert!(shards.iter().all(|s| s["up"] == true));
    assert_eq!(st["subscriptions"], 4);
    assert_eq!(
        st["topChannels"],
        json!([{"channel":"quotes.POP","subscribers":3},{"channel":"trades.RARE","subscribers":1}])
    );
    let (_, body) = http(srv.addr, "GET", "/ws/status?top=1", "").await;
    let top1: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(top1["topChannels"].as_array().unwrap().len(), 1);

    // Disconnects are seen.
    clients.truncate(1);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let st = status(srv.addr).await;
        if st["activeConnections"] == 1 && st["subscriptions"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The seeds' monitoring shape.
    let (code, body) = http(srv.addr, "GET", "/health/websocket", "").await;
    assert_eq!(code, 200);
    let h: Value = serde_json::from_str(&body).unwrap();
    let keys: BTreeSet<&str> = h.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["status", "activeConnections", "uniqueUsers", "uptime"])
    );
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["activeConnections"], 1);
    let (code, _) = http(srv.addr, "POST", "/metrics", "").await;
    assert_eq!(code, 405);
}

#[tokio::test]
async fn unique_users_counts_token_subjects() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let secret = b"status-secret";
    let srv = TestServer::start(|c| c.access.jwt.hs256_secret = Some(secret.to_vec()));
    let token = |sub: &str| {
        let exp = quotecast::auth::unix_now() + 600;
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": exp}),
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let _a = Client::connect_url(&srv.url(&format!("?token={}", token("7"))), false).await;
    let _b = Client::connect_url(&srv.url(&format!("?token={}", token("7"))), false).await;
    let _c = Client::connect_url(&srv.url(&format!("?token={}", token("8"))), false).await;
    let st = status(srv.addr).await;
    assert_eq!(st["activeConnections"], 3);
    assert_eq!(st["uniqueUsers"], 2);
    let s = scrape(srv.addr).await;
    assert_eq!(value(&s, "quotecast_unique_users", &[]), 2.0);
}

/// Metric names in a PromQL or dashboard text: `quotecast_…` and `process_…` words.
pub(crate) fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in ["quotecast_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                out.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    out
}

/// A structural check of the alert rules file (no YAML crate): the Prometheus rule-file
/// shape, consistent two-space indentation, and every rule with an alert name, an
/// expression, a `for`, a severity and a summary.
pub(crate) fn check_alert_rules(yaml: &str) -> Vec<String> {
    let first = yaml
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
    assert_eq!(first, Some("groups:"), "top level is `groups:`");
    let mut exprs = Vec::new();
    let mut rules = 0;
    let mut current: Option<BTreeSet<&str>> = None;
    let finish = |keys: Option<BTreeSet<&str>>| {
        if let Some(k) = keys {
            for want in ["alert", "expr", "for", "severity", "summary"] {
                assert!(k.contains(want), "a rule lacks `{want}`: {k:?}");
            }
        }
    };
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        assert!(!line.contains('\t'), "tab in {line:?}");
        let indent = line.len() - line.trim_start().len();
        assert_eq!(indent % 2, 0, "odd indentation: {line:?}");
        let t = line.trim_start().trim_start_matches("- ");
        let key = t.split(':').next().unwrap_or("");
        if let Some(name) = t.strip_prefix("alert: ") {
            finish(current.take());
            assert!(!name.trim().is_empty());
            current = Some(BTreeSet::new());
            rules += 1;
        }
        if let Some(k) = current.as_mut() {
            k.insert(key);
        }
        if let Some(e) = t.strip_prefix("expr:") {
            let mut expr = e.trim().trim_start_matches(['|', '>']).to_string();
            // A block scalar continues on deeper-indented lines.
            while let Some(next) = lines.peek() {
                let ni = next.len() - next.trim_start().len();
                if next.trim().is_empty() || ni <= indent {
                    break;
                }
                expr.push(' ');
                expr.push_str(next.trim());
                lines.next();
            }
            assert!(!expr.trim().is_empty(), "empty expr");
            let open = expr.matches('(').count();
            assert_eq!(open, expr.matches(')').count(), "unbalanced: {expr}");
            exprs.push(expr);
        }
    }
    finish(current);
    assert!(rules >= 5, "{rules} rules");
    exprs
}

#[tokio::test]
async fn alerts_and_dashboard_use_only_exported_metrics() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let alerts = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    let exprs = check_alert_rules(&alerts);
    let dashboard = std::fs::read_to_string(root.join("grafana/quotecast.json")).unwrap();
    let dash: Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let mut used = BTreeSet::new();
    for e in &exprs {
        used.extend(metric_names(e));
    }
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("each target has an expr");
            used.extend(metric_names(expr));
        }
    }
    assert!(used.len() >= 10, "{used:?}");
    // A live scrape after some traffic.
    let srv = TestServer::default();
    let mut c = Client::connect(&srv).await;
    c.subscribe(&["trades.D"]).await;
    publish_http(srv.addr, &[ev("trades.D", "t", json!(1))]).await;
    c.expect_type("event").await;
    let (_, body) = http(srv.addr, "GET", "/metrics", "").await;
    let samples = parse_exposition(&body).unwrap();
    // Sample names, and families declared with `# TYPE` (a labelled counter such as
    // `quotecast_disconnects_total` has no sample before its first event).
    let mut exported: BTreeSet<String> = samples.iter().map(|s| s.name.clone()).collect();
    for l in body.lines() {
        if let Some(t) = l.strip_prefix("# TYPE ") {
            let name = t.split(' ').next().unwrap();
            exported.insert(name.to_string());
        }
    }
    for name in &used {
        assert!(
            exported.contains(name),
            "{name} is used in deploy/ but not exported"
        );
    }
}
