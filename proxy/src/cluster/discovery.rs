//! `cluster.peers_dns`: the members from DNS, as a pingora-load-balancing `ServiceDiscovery`.
//!
//! The name's A/AAAA records are the members' addresses (a Kubernetes headless Service lists
//! its ready pods; Docker's resolver a network alias' containers); the PTR record of each
//! address gives its member's name, the first label (`framecache-0.framecache-peers...` →
//! `framecache-0`), so that a pod rescheduled with a new address keeps its name, and its
//! cameras. An address without a usable PTR record is left out and logged: a member hashed by
//! its address would move its cameras whenever it moves.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use pingora::{Error, ErrorType};

use super::ring;
use crate::config::member_name;

/// Members from the records of one DNS name.
pub struct Dns {
    host: String,
    port: u16,
    resolver: TokioResolver,
}

impl Dns {
    /// Looks up `host` with the system's resolver configuration (`/etc/resolv.conf`), answers
    /// never cached: every discovery asks again.
    pub fn new(host: &str, port: u16) -> Result<Dns, String> {
        let mut builder = TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?;
        builder.options_mut().cache_size = 0;
        Ok(Dns {
            host: host.to_string(),
            port,
            resolver: builder.build(),
        })
    }
}

#[async_trait]
impl ServiceDiscovery for Dns {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let ips = self
            .resolver
            .lookup_ip(self.host.as_str())
            .await
            .map_err(|e| {
                Error::explain(
                    ErrorType::InternalError,
                    format!("cluster.peers_dns {}: {e}", self.host),
                )
            })?;
        let mut members = BTreeSet::new();
        for ip in ips.iter() {
            let names = match self.resolver.reverse_lookup(ip).await {
                Ok(names) => names,
                Err(error) => {
                    tracing::warn!(%ip, %error, "member address has no name (PTR): left out");
                    continue;
                }
            };
            let name = names.iter().find_map(|ptr| {
                let text = ptr.to_string();
                let first = text.split('.').next()?.to_string();
                member_name(&first).is_ok().then_some(first)
            });
            match name {
                Some(name) => {
                    members.insert(ring::member(&name, (ip, self.port).into()));
                }
                None => tracing::warn!(%ip, "member address has no usable name (PTR): left out"),
            }
        }
        Ok((members, HashMap::new()))
    }
}
