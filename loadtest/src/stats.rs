//! Shared measurement state of one run: counters updated by client and publisher tasks,
//! per-worker-thread latency histograms (merged at the end, so the read path never
//! contends on one lock), and /proc sampling of this process and the server.

use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Highest latency the histograms track (60 s, in ns); larger values saturate.
const MAX_LAT_NS: u64 = 60_000_000_000;

/// Nanoseconds since the Unix epoch (the same clock the publishers stamp with).
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn new_hist() -> Histogram<u64> {
    // Bounds are constants within hdrhistogram's accepted range (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, MAX_LAT_NS, 3).expect("valid constant histogram bounds")
}

/// Latency histograms owned by one runtime worker thread.
#[derive(Debug)]
pub(crate) struct LatHists {
    /// Normal clients, stamps inside the measurement window.
    pub(crate) normal: Histogram<u64>,
    /// Slow clients, reported separately.
    pub(crate) slow: Histogram<u64>,
    /// Normal clients, every stamp, since the sampler last took it: latency over time.
    pub(crate) interval: Histogram<u64>,
}

thread_local! {
    static LOCAL: RefCell<Option<Arc<Mutex<LatHists>>>> = const { RefCell::new(None) };
}

/// Locks a mutex, ignoring poisoning (a panicked task must not hide the others' figures).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters and histograms shared by every task of a run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) connected: AtomicU64,
    pub(crate) acked_clients: AtomicU64,
    pub(crate) connect_failed: AtomicU64,
    /// Events received by normal clients (all of them, for the correctness check).
    pub(crate) events_rx: AtomicU64,
    pub(crate) slow_events_rx: AtomicU64,
    /// Events received whose publisher stamp lies in the measurement window.
    pub(crate) window_rx: AtomicU64,
    pub(crate) slow_window_rx: AtomicU64,
    pub(crate) bytes_rx: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) missing: AtomicU64,
    pub(crate) dups: AtomicU64,
    pub(crate) out_of_order: AtomicU64,
    /// Events on channels not (yet) acked, unparseable frames and the like.
    pub(crate) unexpected: AtomicU64,
    pub(crate) conflated: AtomicU64,
    pub(crate) pings_rx: AtomicU64,
    pub(crate) published_events: AtomicU64,
    pub(crate) published_ops: AtomicU64,
    /// Per channel: events published in total and with stamps in the window.
    pub(crate) published_total: Vec<AtomicU64>,
    pub(crate) published_window: Vec<AtomicU64>,
    /// Per channel: acked subscriptions of normal / slow clients.
    pub(crate) subs_acked: Vec<AtomicU64>,
    pub(crate) slow_subs_acked: Vec<AtomicU64>,
    /// Measurement window in epoch ns; `u64::MAX` start means "not yet".
    pub(crate) window_start_ns: AtomicU64,
    pub(crate) window_end_ns: AtomicU64,
    pub(crate) errors: Mutex<BTreeMap<String, u64>>,
    pub(crate) closes: Mutex<BTreeMap<String, u64>>,
    pub(crate) connect_hist: Mutex<Histogram<u64>>,
    /// Time from the start of the connect phase until every client was acked.
    pub(crate) all_acked_at: Mutex<Option<Duration>>,
    pub(crate) all_connected_at: Mutex<Option<Duration>>,
    hists: Mutex<Vec<Arc<Mutex<LatHists>>>>,
}

impl Shared {
    pub(crate) fn new(channels: usize) -> Self {
        let v = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Shared {
            connected: AtomicU64::new(0),
            acked_clients: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            events_rx: AtomicU64::new(0),
            slow_events_rx: AtomicU64::new(0),
            window_rx: AtomicU64::new(0),
            slow_window_rx: AtomicU64::new(0),
            bytes_rx: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            dups: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            conflated: AtomicU64::new(0),
            pings_rx: AtomicU64::new(0),
            published_events: AtomicU64::new(0),
            published_ops: AtomicU64::new(0),
            published_total: v(channels),
            published_window: v(channels),
            subs_acked: v(channels),
            slow_subs_acked: v(channels),
            window_start_ns: AtomicU64::new(u64::MAX),
            window_end_ns: AtomicU64::new(u64::MAX),
            errors: Mutex::new(BTreeMap::new()),
            closes: Mutex::new(BTreeMap::new()),
            connect_hist: Mutex::new(new_hist()),
            all_acked_at: Mutex::new(None),
            all_connected_at: Mutex::new(None),
            hists: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn error(&self, what: String) {
        *lock(&self.errors).entry(what).or_default() += 1;
    }

    pub(crate) fn close(&self, what: String) {
        *lock(&self.closes).entry(what).or_default() += 1;
    }

    /// Runs `f` with this worker thread's histograms (registered on first use). The lock is
    /// uncontended (only the final merge takes it from another thread); no `Arc` is cloned.
    pub(crate) fn with_hists<R>(&self, f: impl FnOnce(&mut LatHists) -> R) -> R {
        LOCAL.with(|l| {
            let mut slot = l.borrow_mut();
            let h = slot.get_or_insert_with(|| {
                let h = Arc::new(Mutex::new(LatHists {
                    normal: new_hist(),
                    slow: new_hist(),
                    interval: new_hist(),
                }));
                lock(&self.hists).push(h.clone());
                h
            });
            let mut g = lock(h);
            f(&mut g)
        })
    }

    /// Merged (normal, slow) latency histograms of all threads.
    pub(crate) fn merged(&self) -> (Histogram<u64>, Histogram<u64>) {
        let (mut n, mut s) = (new_hist(), new_hist());
        for h in lock(&self.hists).iter() {
            let g = lock(h);
            // Same bounds everywhere, so adding cannot fail; ignore to be safe.
            let _ = n.add(&g.normal);
            let _ = s.add(&g.slow);
        }
        (n, s)
    }

    /// Normal clients' latencies recorded since the last call (all threads), then reset.
    pub(crate) fn take_interval(&self) -> Histogram<u64> {
        let mut n = new_hist();
        for h in lock(&self.hists).iter() {
            let mut g = lock(h);
            let _ = n.add(&g.interval);
            g.interval.reset();
        }
        n
    }

    /// Expected deliveries to normal clients: Σ per channel published × subscribers.
    pub(crate) fn expected(&self, window: bool) -> u64 {
        let p = if window {
            &self.published_window
        } else {
            &self.published_total
        };
        p.iter()
            .zip(&self.subs_acked)
            .map(|(p, s)| p.load(Relaxed) * s.load(Relaxed))
            .sum()
    }
}

/// CPU ticks (utime + stime) of a process, from /proc/PID/stat.
pub(crate) fn proc_cpu_ticks(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields restart after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')' field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Resident set size in KiB, from /proc/PID/status.
pub(crate) fn proc_rss_kb(pid: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the duration of the calls.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return 0;
        }
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_proc() {
        assert!(proc_cpu_ticks("self").is_some());
        assert!(proc_rss_kb("self").unwrap() > 0);
    }
}
