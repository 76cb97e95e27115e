//! The `run` subcommand: optionally spawns the server, connects and subscribes the clients,
//! publishes for warm-up + duration, drains, samples /proc every second, and assembles the
//! results. Every phase is bounded; the whole run sits under a hard deadline.

use crate::client::{self, ClientEnv};
use crate::config::{
    parse_targets, Dialect, Popularity, PublishApi, RunArgs, Scenario, Settings, Target,
};
use crate::publisher::{self, PubPlan};
use crate::pusher_http;
use crate::report::{self, Pcts, Results, Sample, ServerStats, SlowStats};
use crate::stats::{clock_ticks, lock, now_ns, proc_cpu_ticks, proc_rss_kb, Shared};
use anyhow::{bail, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{watch, Semaphore};

/// A server started with `--spawn`, killed by its PID when dropped or at the end.
#[derive(Debug)]
struct Spawned {
    child: Child,
    pid: u32,
}

impl Spawned {
    async fn stop(mut self) {
        // SAFETY: kill(2) with a PID we started and still own (not yet reaped).
        unsafe {
            libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(3), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn spawn_server(a: &RunArgs) -> Result<Option<(Spawned, String)>> {
    let Some(path) = &a.spawn else {
        return Ok(None);
    };
    let mut cmd = Command::new(path);
    cmd.arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .args(&a.spawn_args);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true);
    match &a.server_log {
        Some(p) => cmd
            .stderr(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => cmd.stderr(std::process::Stdio::null()),
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawning {}", path.display()))?;
    let pid = child.id().context("spawned server has no pid")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let find = async {
        while let Some(line) = lines.next_line().await? {
            if let Some(i) = line.find("listening on ") {
                let addr = line[i + "listening on ".len()..]
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                return Ok::<_, anyhow::Error>(Some(addr));
            }
        }
        Ok(None)
    };
    let addr = match tokio::time::timeout(Duration::from_secs(15), find).await {
        Ok(Ok(Some(a))) => a,
        Ok(Ok(None)) => bail!("spawned server exited before printing `listening on`"),
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!("spawned server did not print `listening on 127.0.0.1:PORT` within 15 s"),
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Some((Spawned { child, pid }, format!("ws://{addr}/ws"))))
}

/// Picks `k` distinct channels for client `client`.
fn pick_channels(rng: &mut SmallRng, s: &Settings, cdf: &[f64], client: usize) -> Vec<u32> {
    let n = s.channels;
    if s.popularity == Popularity::Spread {
        // subs <= channels (resolve clamps it), so these are distinct.
        return (0..s.subs)
            .map(|k| ((client * s.subs + k) % n) as u32)
            .collect();
    }
    let mut out: Vec<u32> = Vec::with_capacity(s.subs);
    if s.subs * 2 >= n && s.popularity == Popularity::Uniform {
        let mut all: Vec<u32> = (0..n as u32).collect();
        for i in 0..s.subs {
            let j = rng.gen_range(i..n);
            all.swap(i, j);
        }
        all.truncate(s.subs);
        return all;
    }
    let mut tries = 0;
    while out.len() < s.subs {
        let c = match s.popularity {
            Popularity::Uniform => rng.gen_range(0..n as u32),
            // (Spread returned above.)
            Popularity::Zipf | Popularity::Spread => {
                let u: f64 = rng.gen();
                cdf.partition_point(|&p| p < u).min(n - 1) as u32
            }
        };
        tries += 1;
        if !out.contains(&c) {
            out.push(c);
        } else if tries > 100 * s.subs {
            // Extremely skewed: fill with the most popular channels not yet taken.
            if let Some(c) = (0..n as u32).find(|c| !out.contains(c)) {
                out.push(c);
            }
        }
    }
    out
}

/// A latency in µs for the progress line, in ms.
fn ms(us: Option<u64>) -> String {
    us.map_or("-".into(), |u| format!("{:.1}ms", u as f64 / 1000.0))
}

fn zipf_cdf(n: usize, s: f64) -> Vec<f64> {
    let w: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
    let total: f64 = w.iter().sum();
    let mut acc = 0.0;
    w.iter()
        .map(|x| {
            acc += x / total;
            acc
        })
        .collect()
}

/// Per-second sampler: progress line on stderr plus server/self /proc figures.
#[derive(Debug, Default)]
struct Sampler {
    samples: Vec<Sample>,
    rss_peak: u64,
    rss_last: u64,
    cpu_peak: f64,
}

pub(crate) async fn run(a: RunArgs) -> Result<Results> {
    let s = Settings::resolve(&a)?;
    let secret = match s.publish_api {
        PublishApi::PusherHttp => std::env::var(&a.app_secret_env).with_context(|| {
            format!(
                "--publish-api pusher-http reads the app secret from ${}",
                a.app_secret_env
            )
        })?,
        PublishApi::Ws => String::new(),
    };
    let app = (a.app_id.clone(), a.app_key.clone(), secret);
    let spawned = spawn_server(&a).await?;
    // A spawned server's Pusher subscribers use `/app/{key}`, its publishers still `/ws`.
    let mut spawned_ws = None;
    let (spawned, url) = match spawned {
        Some((sp, url)) if s.dialect == Dialect::Pusher => {
            let pusher = url.replace("/ws", &format!("/app/{}?protocol=7", a.app_key));
            spawned_ws = Some(url);
            (Some(sp), pusher)
        }
        Some((sp, url)) => (Some(sp), url),
        None => (
            None,
            a.url
                .clone()
                .unwrap_or_else(|| "ws://127.0.0.1:8080/ws".into()),
        ),
    };
    let server_pid = spawned.as_ref().map(|sp| sp.pid).or(a.server_pid);
    let hard = Duration::from_secs_f64(s.connect_timeout + s.warmup + s.duration + s.drain + 30.0);
    let publish_arg = a.publish_url.clone().or(spawned_ws);
    let publish_url = publish_arg.clone().unwrap_or_else(|| url.clone());
    let res = match parse_targets(&url, publish_arg.as_deref()) {
        Ok((subs, pubs)) => {
            let urls = (url.clone(), publish_url);
            let phases = run_phases(&s, subs, pubs, urls, server_pid, app);
            tokio::time::timeout(hard, phases).await
        }
        Err(e) => Ok(Err(e)),
    };
    if let Some(sp) = spawned {
        sp.stop().await;
    }
    match res {
        Ok(r) => r,
        Err(_) => bail!(
            "hard deadline of {:.0} s exceeded; run aborted",
            hard.as_secs_f64()
        ),
    }
}

/// `subs`: the subscribers' servers (client `i` uses `subs[i % len]`); `pubs`: the
/// publishers' (publisher `p` uses `pubs[p % len]`); `urls`: both as given, for the report.
async fn run_phases(
    s: &Settings,
    subs: Vec<Target>,
    pubs: Vec<Target>,
    urls: (String, String),
    server_pid: Option<u32>,
    app: (String, String, String),
) -> Result<Results> {
    let (url, publish_url) = urls;
    let sh = Arc::new(Shared::new(s.channels));
    let tck = clock_ticks();
    let pid_s = server_pid.map(|p| p.to_string());
    let rss_before = pid_s.as_deref().and_then(proc_rss_kb).unwrap_or(0);
    let self_t0 = (Instant::now(), proc_cpu_ticks("self").unwrap_or(0));
    let srv_t0 = pid_s.as_deref().and_then(proc_cpu_ticks);

    // Sampler.
    let sampler = Arc::new(Mutex::new(Sampler::default()));
    let run_t0 = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let samp_task = {
        let (sh, sampler, pid_s, mut stop) =
            (sh.clone(), sampler.clone(), pid_s.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last = (
                Instant::now(),
                0u64,
                0u64,
                proc_cpu_ticks("self").unwrap_or(0),
                pid_s.as_deref().and_then(proc_cpu_ticks),
            );
            tick.tick().await;
            loop {
                tokio::select! { _ = tick.tick() => {}, _ = stop.changed() => return }
                let now = Instant::now();
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let pubd = sh.published_events.load(Relaxed);
                let rx = sh.events_rx.load(Relaxed) + sh.slow_events_rx.load(Relaxed);
                let me = proc_cpu_ticks("self").unwrap_or(0);
                let srv = pid_s.as_deref().and_then(proc_cpu_ticks);
                let rss = pid_s.as_deref().and_then(proc_rss_kb);
                let srv_cpu = match (srv, last.4) {
                    (Some(a), Some(b)) => Some((a.saturating_sub(b)) as f64 / tck / dt * 100.0),
                    _ => None,
                };
                let iv = sh.take_interval();
                let pct = |q: f64| (!iv.is_empty()).then(|| iv.value_at_quantile(q) / 1000);
                let smp = Sample {
                    t: run_t0.elapsed().as_secs_f64(),
                    connected: sh.connected.load(Relaxed),
                    acked: sh.acked_clients.load(Relaxed),
                    published_per_s: (pubd - last.1) as f64 / dt,
                    received_per_s: (rx - last.2) as f64 / dt,
                    server_rss_kb: rss,
                    server_cpu_pct: srv_cpu,
                    self_cpu_pct: me.saturating_sub(last.3) as f64 / tck / dt * 100.0,
                    p50_us: pct(0.5),
                    p99_us: pct(0.99),
                    max_us: (!iv.is_empty()).then(|| iv.max() / 1000),
                };
                eprintln!(
                    "[{:5.1}s] conn {} acked {} fail {} | pub {:.0}/s recv {:.0}/s | p50 {} p99 {} | srv rss {} cpu {} | self cpu {:.0}%",
                    smp.t,
                    smp.connected,
                    smp.acked,
                    sh.connect_failed.load(Relaxed),
                    smp.published_per_s,
                    smp.received_per_s,
                    ms(smp.p50_us),
                    ms(smp.p99_us),
                    rss.map_or("-".into(), |r| format!("{:.1}MB", r as f64 / 1024.0)),
                    srv_cpu.map_or("-".into(), |c| format!("{c:.0}%")),
                    smp.self_cpu_pct
                );
                {
                    let mut g = lock(&sampler);
                    if let Some(r) = rss {
                        g.rss_peak = g.rss_peak.max(r);
                        g.rss_last = r;
                    }
                    if let Some(c) = srv_cpu {
                        g.cpu_peak = g.cpu_peak.max(c);
                    }
                    g.samples.push(smp);
                }
                last = (now, pubd, rx, me, srv);
            }
        })
    };

    // Connect phase.
    let mut rng = SmallRng::seed_from_u64(s.seed);
    let cdf = if s.popularity == Popularity::Zipf {
        zipf_cdf(s.channels, s.zipf_s)
    } else {
        Vec::new()
    };
    let phase_start = Instant::now();
    let env = Arc::new(ClientEnv {
        targets: subs,
        format: s.format,
        dialect: s.dialect,
        read_buf: s.read_buf,
        rcvbuf: s.rcvbuf,
        clients: s.clients as u64,
        slow_mode: s.slow_mode,
        slow_fraction: s.slow_fraction,
        per_channel_rate: s.rate / s.channels as f64,
        phase_start,
        connect_sem: (s.max_inflight_connects > 0)
            .then(|| Arc::new(Semaphore::new(s.max_inflight_connects))),
        shared: sh.clone(),
    });
    let mut handles = Vec::with_capacity(s.clients);
    let mut slow_clients = 0u64;
    let connect_deadline = phase_start + Duration::from_secs_f64(s.connect_timeout);
    for i in 0..s.clients {
        let chans = pick_channels(&mut rng, s, &cdf, i);
        let slow = ((i + 1) as f64 * s.slow_share).floor() > (i as f64 * s.slow_share).floor();
        slow_clients += u64::from(slow);
        handles.push(tokio::spawn(client::run(
            env.clone(),
            i,
            chans,
            slow,
            stop_rx.clone(),
        )));
        if s.connect_rate > 0.0 {
            let due = phase_start + Duration::from_secs_f64((i + 1) as f64 / s.connect_rate);
            if due > connect_deadline {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        } else if i % 256 == 255 {
            tokio::task::yield_now().await;
        }
    }
    // Wait until everyone is acked (or failed) or the connect timeout passes.
    loop {
        let done = sh.acked_clients.load(Relaxed) + sh.connect_failed.load(Relaxed);
        if done >= s.clients as u64 || Instant::now() >= connect_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connect_elapsed = phase_start.elapsed().as_secs_f64();
    let connected_n = sh.connected.load(Relaxed);
    let rss_after = if let Some(p) = pid_s.as_deref() {
        // Let the server settle (allocations, queues) before reading RSS.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        proc_rss_kb(p).unwrap_or(0)
    } else {
        0
    };

    // Publish phase (or just hold the connections when there is no traffic).
    let pub_start = Instant::now();
    let wstart = now_ns() + (s.warmup * 1e9) as u64;
    let wend = wstart + (s.duration * 1e9) as u64;
    sh.window_start_ns.store(wstart, Relaxed);
    sh.window_end_ns.store(wend, Relaxed);
    let end = pub_start + Duration::from_secs_f64(s.warmup + s.duration);
    if s.rate > 0.0 && s.publish_api == PublishApi::PusherHttp {
        let app = Arc::new(pusher_http::App {
            id: app.0.clone(),
            key: app.1.clone(),
            secret: app.2.clone(),
        });
        let mut tasks = Vec::new();
        for p in 0..s.publishers {
            let plan = PubPlan {
                target: pubs[p % pubs.len()].clone(),
                chans: (0..s.channels as u32)
                    .filter(|c| *c as usize % s.publishers == p)
                    .collect(),
                rate: s.rate / s.publishers as f64,
                batch: s.batch,
                payload_bytes: s.payload_bytes,
                start: pub_start,
                end,
            };
            tasks.push(tokio::spawn(pusher_http::run(
                plan,
                app.clone(),
                sh.clone(),
            )));
        }
        for t in tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => sh.error(format!("publisher: {e:#}")),
                Err(e) => sh.error(format!("publisher task: {e}")),
            }
        }
    } else if s.rate > 0.0 {
        let mut plans = Vec::new();
        for p in 0..s.publishers {
            let chans: Vec<u32> = (0..s.channels as u32)
                .filter(|c| *c as usize % s.publishers == p)
                .collect();
            let plan = PubPlan {
                target: pubs[p % pubs.len()].clone(),
                chans,
                rate: s.rate / s.publishers as f64,
                batch: s.batch,
                payload_bytes: s.payload_bytes,
                start: pub_start,
                end,
            };
            let conn = publisher::connect(&plan).await?;
            plans.push((plan, conn));
        }
        let mut pubs = Vec::new();
        for (plan, conn) in plans {
            pubs.push(tokio::spawn(publisher::run(plan, conn, sh.clone())));
        }
        for p in pubs {
            match p.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => sh.error(format!("publisher: {e:#}")),
                Err(e) => sh.error(format!("publisher task: {e}")),
            }
        }
    } else {
        tokio::time::sleep_until(end.into()).await;
    }
    let publish_elapsed = pub_start.elapsed().as_secs_f64();

    // Drain: wait until normal clients got everything, or progress stalls, or time is up.
    let drain_end = Instant::now() + Duration::from_secs_f64(s.drain);
    let mut last = (sh.events_rx.load(Relaxed), Instant::now());
    while Instant::now() < drain_end {
        let got = sh.events_rx.load(Relaxed);
        if got >= sh.expected(false) {
            break;
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Final /proc figures before tearing the connections down.
    let self_cpu = proc_cpu_ticks("self")
        .unwrap_or(0)
        .saturating_sub(self_t0.1) as f64
        / tck
        / self_t0.0.elapsed().as_secs_f64()
        * 100.0;
    let srv_cpu_avg = match (pid_s.as_deref().and_then(proc_cpu_ticks), srv_t0) {
        (Some(a), Some(b)) => {
            a.saturating_sub(b) as f64 / tck / self_t0.0.elapsed().as_secs_f64() * 100.0
        }
        _ => 0.0,
    };
    let rss_final = pid_s.as_deref().and_then(proc_rss_kb).unwrap_or(0);

    let _ = stop_tx.send(true);
    let join_all = async {
        for h in handles {
            let _ = h.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), join_all).await;
    let _ = samp_task.await;

    // Assemble.
    let (normal, slow) = sh.merged();
    let ch = lock(&sh.connect_hist).clone();
    let sm = std::mem::take(&mut *lock(&sampler));
    let expected_window = sh.expected(true);
    let delivered_window = sh.window_rx.load(Relaxed);
    let slow_expected_window: u64 = sh
        .published_window
        .iter()
        .zip(&sh.slow_subs_acked)
        .map(|(p, s)| p.load(Relaxed) * s.load(Relaxed))
        .sum();
    let measured = s.duration.max(1e-9);
    let all_acked = *lock(&sh.all_acked_at);
    let mut r = Results {
        name: s.name.clone(),
        url,
        publish_url,
        settings: Some(s.clone()),
        clients_connected: connected_n,
        clients_acked: sh.acked_clients.load(Relaxed),
        connect_failed: sh.connect_failed.load(Relaxed),
        connect_us: Pcts::of(&ch, 1.0),
        all_connected_s: lock(&sh.all_connected_at).map(|d| d.as_secs_f64()),
        all_acked_s: all_acked.map(|d| d.as_secs_f64()),
        connect_rate_per_s: connected_n as f64
            / all_acked
                .map_or(connect_elapsed, |d| d.as_secs_f64())
                .max(1e-9),
        published_events: sh.published_events.load(Relaxed),
        published_ops: sh.published_ops.load(Relaxed),
        publish_rate_per_s: sh.published_events.load(Relaxed) as f64 / publish_elapsed.max(1e-9),
        measured_s: s.duration,
        window_start_unix_ns: wstart,
        expected_window,
        delivered_window,
        expected_per_s: expected_window as f64 / measured,
        delivered_per_s: delivered_window as f64 / measured,
        delivery_ratio: if expected_window > 0 {
            delivered_window as f64 / expected_window as f64
        } else {
            1.0
        },
        expected_total: sh.expected(false),
        delivered_total: sh.events_rx.load(Relaxed),
        latency_us: Pcts::of(&normal, 1000.0),
        latency_curve: report::curve(&normal),
        slow: SlowStats {
            clients: slow_clients,
            delivered_total: sh.slow_events_rx.load(Relaxed),
            delivered_window: sh.slow_window_rx.load(Relaxed),
            expected_window: slow_expected_window,
            latency_us: Pcts::of(&slow, 1000.0),
        },
        gaps: sh.gaps.load(Relaxed),
        missing: sh.missing.load(Relaxed),
        duplicates: sh.dups.load(Relaxed),
        out_of_order: sh.out_of_order.load(Relaxed),
        unexpected: sh.unexpected.load(Relaxed),
        conflated: sh.conflated.load(Relaxed),
        pings_received: sh.pings_rx.load(Relaxed),
        bytes_received: sh.bytes_rx.load(Relaxed),
        errors: lock(&sh.errors).clone(),
        closes: lock(&sh.closes).clone(),
        self_cpu_pct: self_cpu,
        server: server_pid.map(|pid| ServerStats {
            pid,
            rss_before_connect_kb: rss_before,
            rss_after_connect_kb: rss_after,
            rss_peak_kb: sm.rss_peak.max(rss_after).max(rss_final),
            rss_final_kb: rss_final,
            rss_per_conn_bytes: (rss_after.saturating_sub(rss_before) * 1024) as f64
                / connected_n.max(1) as f64,
            cpu_pct_avg: srv_cpu_avg,
            cpu_pct_peak: sm.cpu_peak,
        }),
        samples: sm.samples,
        failures: Vec::new(),
    };
    if s.scenario == Scenario::Smoke {
        r.failures = smoke_failures(&r, s);
    }
    Ok(r)
}

/// Correctness assertions of the `smoke` scenario; empty means pass.
fn smoke_failures(r: &Results, s: &Settings) -> Vec<String> {
    let mut f = Vec::new();
    if r.clients_acked != s.clients as u64 {
        f.push(format!(
            "only {} of {} clients connected and subscribed",
            r.clients_acked, s.clients
        ));
    }
    if r.published_events == 0 {
        f.push("nothing was published".into());
    }
    if r.delivered_total != r.expected_total {
        f.push(format!(
            "delivered {} events, expected exactly {}",
            r.delivered_total, r.expected_total
        ));
    }
    if r.gaps + r.duplicates + r.out_of_order + r.unexpected > 0 {
        f.push(format!(
            "sequence problems: {} gaps ({} missing), {} duplicates, {} out of order, {} unexpected frames",
            r.gaps, r.missing, r.duplicates, r.out_of_order, r.unexpected
        ));
    }
    if !r.errors.is_empty() {
        f.push(format!("errors: {:?}", r.errors));
    }
    if !r.closes.is_empty() {
        f.push(format!("unexpected closes: {:?}", r.closes));
    }
    if r.latency_us.count == 0 {
        f.push("no latency samples in the measurement window".into());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_low_ranks_and_picks_distinct() {
        let cdf = zipf_cdf(1000, 1.0);
        assert!((cdf[999] - 1.0).abs() < 1e-9);
        let a = RunArgs::parse_for_test(&["--scenario", "market"]);
        let s = Settings::resolve(&a).unwrap();
        let mut rng = SmallRng::seed_from_u64(3);
        let mut low = 0;
        for _ in 0..1000 {
            let c = pick_channels(&mut rng, &s, &cdf, 0);
            let mut d = c.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 10);
            low += c.iter().filter(|&&x| x < 10).count();
        }
        assert!(
            low > 2000,
            "zipf should favour the first channels, got {low}"
        );
    }

    #[test]
    fn spread_gives_every_channel_the_same_count() {
        let a = RunArgs::parse_for_test(&[
            "--clients",
            "1000",
            "--channels",
            "500",
            "--subs",
            "3",
            "--popularity",
            "spread",
        ]);
        let s = Settings::resolve(&a).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut count = vec![0u32; s.channels];
        for i in 0..s.clients {
            let c = pick_channels(&mut rng, &s, &[], i);
            let mut d = c.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), 3, "client {i}: {c:?}");
            for ch in c {
                count[ch as usize] += 1;
            }
        }
        // 1000 clients x 3 subscriptions over 500 channels: 6 each.
        assert!(count.iter().all(|&n| n == 6), "{count:?}");
    }
}
