//! What the membership sources that come and go tell the router: the registrations valid in
//! Redis ([`SyncRegistry`]) and the addresses `COORDINATOR_NODES_DNS` resolves to
//! ([`SyncDns`]). Each replaces its own source's members and leaves the others alone.

use actix::{Context, Handler, Message};
use rerank_shared::registry::Registration;

use super::{node_id, NodeSource, RouterActor};

/// The registrations currently valid in Redis (signatures and expiries already checked):
/// registry members not listed leave.
pub struct SyncRegistry {
    pub registrations: Vec<Registration>,
}

impl Message for SyncRegistry {
    type Result = ();
}

impl Handler<SyncRegistry> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: SyncRegistry, _: &mut Context<Self>) {
        let listed: Vec<(String, &Registration)> = msg
            .registrations
            .iter()
            .map(|r| (node_id(&r.url), r))
            .collect();
        // A drained incarnation no longer listed has expired or been replaced: forget it.
        self.drained.retain(|id, incarnation| {
            listed
                .iter()
                .any(|(listed_id, r)| listed_id == id && &r.incarnation == incarnation)
        });
        let mut present = Vec::with_capacity(listed.len());
        for (id, registration) in listed {
            if self.drained.get(&id) == Some(&registration.incarnation) {
                continue;
            }
            match self.members.get_mut(&id) {
                Some(member) if member.source == NodeSource::Registry => {
                    member.incarnation = Some(registration.incarnation.clone());
                }
                Some(_) => {}
                None => {
                    self.add(
                        &registration.url,
                        NodeSource::Registry,
                        Some(registration.incarnation.clone()),
                    );
                }
            }
            present.push(id);
        }
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(id, m)| m.source == NodeSource::Registry && !present.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }
}

/// The node URLs `COORDINATOR_NODES_DNS` resolves to now (a successful, non-empty answer):
/// DNS members not listed leave.
pub struct SyncDns {
    pub urls: Vec<String>,
}

impl Message for SyncDns {
    type Result = ();
}

impl Handler<SyncDns> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: SyncDns, _: &mut Context<Self>) {
        let listed: Vec<(String, &String)> = msg.urls.iter().map(|u| (node_id(u), u)).collect();
        // A drained address the name no longer resolves to may come back as a new member.
        self.drained_dns
            .retain(|id| listed.iter().any(|(listed_id, _)| listed_id == id));
        for (id, url) in &listed {
            if !self.drained_dns.contains(id) {
                self.add(url, NodeSource::Dns, None);
            }
        }
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(id, m)| {
                m.source == NodeSource::Dns && !listed.iter().any(|(listed_id, _)| listed_id == *id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix::Actor;
    use rerank_shared::config::Routing;

    use super::*;
    use crate::actors::{AddNode, ForgetNode, ListNodes, RouterSettings};

    fn router() -> actix::Addr<RouterActor> {
        let settings = RouterSettings {
            routing: Routing::ConsistentHash,
            epsilon: 0.25,
            virtual_nodes: 8,
            // No health check runs during these tests.
            health_interval: Duration::from_secs(3600),
        };
        RouterActor::new(settings, reqwest::Client::new()).start()
    }

    async fn members(router: &actix::Addr<RouterActor>) -> Vec<(String, NodeSource)> {
        let nodes = router.send(ListNodes).await.expect("router");
        nodes.into_iter().map(|n| (n.id, n.source)).collect()
    }

    fn urls(list: &[&str]) -> SyncDns {
        SyncDns {
            urls: list.iter().map(|u| u.to_string()).collect(),
        }
    }

    /// DNS adds and removes only its own members: a static node the name also resolves to
    /// stays static and stays when the name drops it.
    #[actix_web::test]
    async fn dns_members_come_and_go_beside_the_other_sources() {
        let router = router();
        router
            .send(AddNode {
                url: "http://10.0.0.1:8000".into(),
                source: NodeSource::Static,
            })
            .await
            .expect("router");
        router
            .send(urls(&["http://10.0.0.1:8000", "http://10.0.0.2:8000"]))
            .await
            .expect("router");
        assert_eq!(
            members(&router).await,
            vec![
                ("10.0.0.1:8000".to_string(), NodeSource::Static),
                ("10.0.0.2:8000".to_string(), NodeSource::Dns),
            ]
        );
        router
            .send(urls(&["http://10.0.0.3:8000"]))
            .await
            .expect("router");
        assert_eq!(
            members(&router).await,
            vec![
                ("10.0.0.1:8000".to_string(), NodeSource::Static),
                ("10.0.0.3:8000".to_string(), NodeSource::Dns),
            ]
        );
    }

    /// A DNS member an operator removed stays out while the name resolves to it, and may come
    /// back once the name has dropped it.
    #[actix_web::test]
    async fn a_drained_dns_member_stays_out_while_listed() {
        let router = router();
        let one = urls(&["http://10.0.0.2:8000"]);
        router.send(one).await.expect("router");
        router
            .send(ForgetNode {
                id: "10.0.0.2:8000".into(),
            })
            .await
            .expect("router");
        router
            .send(urls(&["http://10.0.0.2:8000"]))
            .await
            .expect("router");
        assert!(members(&router).await.is_empty(), "still drained");
        router.send(urls(&[])).await.expect("router");
        router
            .send(urls(&["http://10.0.0.2:8000"]))
            .await
            .expect("router");
        assert_eq!(
            members(&router).await,
            vec![("10.0.0.2:8000".to_string(), NodeSource::Dns)]
        );
    }
}
