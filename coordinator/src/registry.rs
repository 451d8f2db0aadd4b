//! Nodes that register themselves in Redis (`rr:nodes:{id}` → URL, refreshed every second with
//! a short TTL) join the ring; when a registration expires, the node leaves. A Redis outage
//! changes nothing: the last known membership stays.

use std::time::Duration;

use actix::Addr;
use rerank_shared::config::NODE_REGISTRY_PREFIX;

use crate::actors::{RouterActor, SyncRegistry};

/// How often the registry is read.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Reads the registry forever, telling the router what it finds.
pub async fn watch(client: redis::Client, router: Addr<RouterActor>) {
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    loop {
        if connection.is_none() {
            connection = tokio::time::timeout(
                Duration::from_secs(1),
                client.get_multiplexed_async_connection(),
            )
            .await
            .ok()
            .and_then(Result::ok);
        }
        if let Some(con) = connection.as_mut() {
            match read(con).await {
                Ok(urls) => router.do_send(SyncRegistry { urls }),
                Err(e) => {
                    tracing::warn!(error = %e, "node registry unreadable; keeping the last membership");
                    connection = None;
                }
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

async fn read(con: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<Vec<String>> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{NODE_REGISTRY_PREFIX}*"))
        .query_async(con)
        .await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let urls: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(con).await?;
    Ok(urls.into_iter().flatten().collect())
}
