//! Redis Sentinel: where the master is now. Before every (re)connect the bridge asks the
//! configured sentinels in turn (`SENTINEL get-master-addr-by-name`, the first that answers
//! wins) and connects to that address; once connected it checks with `ROLE` that the server
//! is a master (a sentinel may still name a demoted one during a failover). A failover then
//! looks like any Redis outage: the connection breaks (or writes fail with `READONLY`, which
//! breaks the link too), the bridge reconnects to the new master, and since the new master
//! is another Redis process (another `run_id`) every channel gets a new epoch at its next
//! touch, so events the replica had not received are never silently lost.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, RedisError, RedisResult};

use super::config::parse_host_port;

fn err(msg: String) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, msg))
}

/// The client for the current master: `base` (password, database, protocol) at the address
/// the first answering sentinel gives for `master`.
pub(super) async fn master_client(
    base: &redis::Client,
    master: &str,
    sentinels: &[String],
    timeout: Duration,
) -> RedisResult<redis::Client> {
    let mut errors = Vec::new();
    for s in sentinels {
        match ask(s, master, timeout).await {
            Ok((host, port)) => {
                let info = base
                    .get_connection_info()
                    .clone()
                    .set_addr(ConnectionAddr::Tcp(host, port));
                return redis::Client::open(info);
            }
            Err(e) => errors.push(format!("{s}: {e}")),
        }
    }
    Err(err(format!(
        "no sentinel knows master {master:?}: {}",
        errors.join("; ")
    )))
}

/// One sentinel's answer for `master`.
async fn ask(sentinel: &str, master: &str, timeout: Duration) -> RedisResult<(String, u16)> {
    let (host, port) =
        parse_host_port(sentinel).ok_or_else(|| err(format!("{sentinel:?} is not host:port")))?;
    let client = redis::Client::open(ConnectionAddr::Tcp(host, port))?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await?;
    let (h, p) = addr.ok_or_else(|| err(format!("unknown master {master:?}")))?;
    let p: u16 = p
        .parse()
        .map_err(|_| err(format!("bad port {p:?} from the sentinel")))?;
    Ok((h, p))
}

/// Fails unless the server behind `conn` is a master (`ROLE`).
pub(super) async fn check_master(conn: &mut MultiplexedConnection) -> RedisResult<()> {
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(conn).await?;
    match role.first() {
        Some(redis::Value::BulkString(b)) if b == b"master" => Ok(()),
        Some(redis::Value::SimpleString(s)) if s == "master" => Ok(()),
        other => Err(err(format!(
            "the sentinel's master answers ROLE {other:?}, not master (failover under way)"
        ))),
    }
}
