//! This node's membership in the cluster: a background task that keeps a registration signed
//! with `CLUSTER_SECRET` in Redis (the protocol is `rerank_shared::registry`) for as long as the
//! node runs, and withdraws it when the node stops or, first thing in a drain, when asked
//! ([`Registrar::withdraw`]).
//!
//! It runs apart from the score cache on purpose: membership and caching fail, recover and are
//! configured independently (a node may cache through Redis without joining a coordinator).
//! A Redis outage only delays renewals; coordinators keep the last membership they saw.

use std::time::Duration;

use actix::{Actor, WeakAddr};
use redis::aio::ConnectionManager;
use rerank_shared::config::NodeConfig;
use rerank_shared::registry::{self, now_ms, ClusterKey, Registration, REFRESH_INTERVAL};
use tokio::sync::{mpsc, oneshot};

use crate::cache::shared_tier::bounded_connection;

/// What the node registers, where, and under which key.
#[derive(Debug, Clone)]
pub struct RegistrationSettings {
    pub redis_url: String,
    /// `NODE_ID`.
    pub node_id: String,
    /// The base URL coordinators forward to (`NODE_URL`, else `http://HOST:PORT`).
    pub url: String,
    /// From `CLUSTER_SECRET`.
    pub key: ClusterKey,
    /// Bound on each Redis call.
    pub op_timeout: Duration,
}

impl RegistrationSettings {
    /// What `config` registers: nothing without Redis; nothing, with a warning, without
    /// `CLUSTER_SECRET` (coordinators would ignore an unsigned registration anyway).
    pub fn from_config(config: &NodeConfig, node_id: &str) -> Option<Self> {
        if !config.redis_enabled {
            return None;
        }
        let Some(key) = config.cluster_secret.as_deref().and_then(ClusterKey::new) else {
            tracing::warn!(
                "REDIS_ENABLED without CLUSTER_SECRET: this node shares the cache but does not \
                 register, so coordinators reach it only through COORDINATOR_NODES or their \
                 admin API"
            );
            return None;
        };
        Some(Self {
            redis_url: config.redis_url.clone(),
            node_id: node_id.to_string(),
            url: config
                .node_url
                .clone()
                .unwrap_or_else(|| format!("http://{}:{}", config.host, config.port)),
            key,
            op_timeout: Duration::from_millis(config.redis_timeout_ms),
        })
    }
}

/// The running registration task: asks it to withdraw the registration before the node stops.
#[derive(Debug, Clone)]
pub struct Registrar {
    withdraw: mpsc::Sender<oneshot::Sender<()>>,
    op_timeout: Duration,
}

impl Registrar {
    /// Stops renewing and deletes this node's registration (only if it is still the one this
    /// node wrote: a newer registration of the same id, a restarted node's, stays). Resolves
    /// once it is gone, or after a bounded wait when Redis does not answer (the registration
    /// then lapses within `REGISTRATION_TTL`).
    pub async fn withdraw(&self) {
        let (done, gone) = oneshot::channel();
        if self.withdraw.send(done).await.is_err() {
            return;
        }
        // The task may be in a renewal, then in the delete: two Redis calls at most.
        let _ = tokio::time::timeout(self.op_timeout * 2, gone).await;
    }
}

/// Starts renewing this node's registration every [`REFRESH_INTERVAL`] until `owner` (the
/// node's actor) stops or the returned [`Registrar`] withdraws it (or is dropped, with its
/// clones); then deletes it. Never waits for Redis. Fails only on a malformed `REDIS_URL`.
pub fn start<A: Actor>(
    settings: RegistrationSettings,
    owner: WeakAddr<A>,
) -> Result<Registrar, redis::RedisError> {
    let client = redis::Client::open(settings.redis_url.as_str())?;
    let connection = bounded_connection(&client, settings.op_timeout)?;
    tracing::info!(node = %settings.node_id, url = %settings.url, "registering in the cluster registry");
    let (withdraw, requests) = mpsc::channel(1);
    let registrar = Registrar {
        withdraw,
        op_timeout: settings.op_timeout,
    };
    actix_web::rt::spawn(keep_registered(connection, settings, owner, requests));
    Ok(registrar)
}

async fn keep_registered<A: Actor>(
    mut con: ConnectionManager,
    settings: RegistrationSettings,
    owner: WeakAddr<A>,
    mut withdraw: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut registration = Registration::new(&settings.node_id, &settings.url, now_ms());
    let mut stored: Option<String> = None;
    let mut failing = false;
    let mut withdrawn: Option<oneshot::Sender<()>> = None;
    while owner.upgrade().is_some() {
        registration = registration.renewed(now_ms());
        let signed = settings.key.sign(&registration);
        let published = tokio::time::timeout(
            settings.op_timeout,
            registry::publish(&mut con, &settings.node_id, &signed),
        )
        .await;
        match published {
            Ok(Ok(())) => {
                if failing {
                    tracing::info!("cluster registration renewed again");
                }
                failing = false;
                stored = Some(signed);
            }
            Ok(Err(e)) if !failing => {
                tracing::warn!(error = %e, "cannot renew the cluster registration; retrying");
                failing = true;
            }
            Err(_) if !failing => {
                tracing::warn!("cluster registration timed out in Redis; retrying");
                failing = true;
            }
            Ok(Err(_)) | Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(REFRESH_INTERVAL) => {}
            asked = withdraw.recv() => {
                withdrawn = asked;
                break;
            }
        }
    }
    if let Some(signed) = stored {
        let removed = tokio::time::timeout(
            settings.op_timeout,
            registry::remove_if_unchanged(&mut con, &settings.node_id, &signed),
        )
        .await;
        match removed {
            Ok(Ok(true)) => tracing::info!("left the cluster registry"),
            Ok(Ok(false)) => {
                tracing::info!("registration already replaced or gone: left as it is");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot withdraw the registration; it lapses by itself");
            }
            Err(_) => tracing::warn!("withdrawing the registration timed out; it lapses by itself"),
        }
    }
    if let Some(done) = withdrawn {
        let _ = done.send(());
    }
}
