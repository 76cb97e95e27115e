//! Wall-clock time for the layers that do I/O (server, cluster, demo task). The engine and
//! protocol layers never read a clock: the shard is given the time (`Shard::set_now`).

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
