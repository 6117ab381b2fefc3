//! Zone ingresses may advertise a hostname. Envoy's EDS wants IPs, so the
//! zone resolves those names with hickory (the system's resolver config
//! and hosts file), keeps the answers, and regenerates the proxies when an
//! answer changes. Names are resolved again every [`REFRESH`].

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::{Resource, ResourceType, Spec};
use store::Store;
use tokio_util::sync::CancellationToken;

use super::proxies::Proxies;

const REFRESH: Duration = Duration::from_secs(30);
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Resolved ingress hostnames; cheap to clone.
#[derive(Clone, Default)]
pub struct Names {
    map: Arc<RwLock<HashMap<String, IpAddr>>>,
}

fn hostname(address: &str) -> Option<&str> {
    (!address.is_empty() && address.parse::<IpAddr>().is_err()).then_some(address)
}

/// The hostnames ZoneIngresses advertise (or listen on).
fn hostnames(ingresses: &[Resource]) -> BTreeSet<String> {
    ingresses
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::ZoneIngress(zi) => {
                let n = &zi.networking;
                hostname(n.advertised_address.as_deref().unwrap_or(&n.address)).map(str::to_owned)
            }
            _ => None,
        })
        .collect()
}

impl Names {
    /// Replaces advertised hostnames by their resolved address; names not
    /// resolved (yet) stay, and generation leaves such ingresses out.
    pub fn substitute(&self, ingresses: &mut [Resource]) {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        for r in ingresses {
            if let Spec::ZoneIngress(zi) = &mut r.spec {
                let n = &mut zi.networking;
                let slot = match &mut n.advertised_address {
                    Some(a) => a,
                    None => &mut n.address,
                };
                if let Some(ip) = hostname(slot).and_then(|h| map.get(h)) {
                    *slot = ip.to_string();
                }
            }
        }
    }

    fn update(&self, resolved: HashMap<String, IpAddr>) -> bool {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        let changed = *map != resolved;
        *map = resolved;
        changed
    }
}

/// Resolves the ingresses' hostnames on every ZoneIngress change and every
/// [`REFRESH`]; regenerates proxies when an answer changes.
pub async fn run(store: Store, names: Names, proxies: Proxies, shutdown: CancellationToken) {
    let resolver = match hickory_resolver::TokioAsyncResolver::tokio_from_system_conf() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "no DNS resolver: zone ingresses must advertise IP addresses");
            return;
        }
    };
    let mut watch = store.watch();
    loop {
        let s = store.clone();
        let ingresses =
            tokio::task::spawn_blocking(move || s.list(ResourceType::ZoneIngress, None))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
        let mut resolved = HashMap::new();
        for host in hostnames(&ingresses) {
            match tokio::time::timeout(LOOKUP_TIMEOUT, resolver.lookup_ip(host.as_str())).await {
                Ok(Ok(ips)) => {
                    // Loopback and dual-stack hosts: prefer IPv4, as
                    // ingresses usually listen on it.
                    let mut all: Vec<IpAddr> = ips.iter().collect();
                    all.sort_by_key(IpAddr::is_ipv6);
                    if let Some(ip) = all.first().copied() {
                        resolved.insert(host, ip);
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(host, error = %e, "cannot resolve a zone ingress address")
                }
                Err(_) => tracing::warn!(host, "resolving a zone ingress address timed out"),
            }
        }
        if names.update(resolved) {
            tracing::info!("zone ingress addresses resolved; regenerating proxies");
            let p = proxies.clone();
            let _ = tokio::task::spawn_blocking(move || p.regenerate(None)).await;
        }
        let refresh = tokio::time::sleep(REFRESH);
        tokio::pin!(refresh);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut refresh => break,
                c = watch.recv() => match c {
                    Ok(c) if c.kind.resource().ty() == ResourceType::ZoneIngress => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(address: &str, advertised: Option<&str>) -> Resource {
        let mut v = serde_json::json!({
            "type": "ZoneIngress", "name": "i", "zone": "z",
            "networking": {"address": address, "port": 10000},
        });
        if let Some(a) = advertised {
            v["networking"]["advertisedAddress"] = a.into();
            v["networking"]["advertisedPort"] = 10000.into();
        }
        Resource::from_value(v).unwrap()
    }

    #[test]
    fn hostnames_are_found_and_substituted_ips_are_left_alone() {
        let list = [
            ingress("10.0.0.1", Some("ingress.example")),
            ingress("ingress-b.example", None),
            ingress("10.0.0.3", Some("10.0.0.4")),
        ];
        assert_eq!(
            hostnames(&list),
            BTreeSet::from(["ingress-b.example".to_owned(), "ingress.example".to_owned()])
        );
        let names = Names::default();
        assert!(names.update(HashMap::from([(
            "ingress.example".to_owned(),
            "203.0.113.7".parse().unwrap()
        )])));
        let mut list = list.to_vec();
        names.substitute(&mut list);
        let addr = |r: &Resource| match &r.spec {
            Spec::ZoneIngress(zi) => (
                zi.networking.address.clone(),
                zi.networking.advertised_address.clone(),
            ),
            _ => unreachable!(),
        };
        assert_eq!(addr(&list[0]).1.as_deref(), Some("203.0.113.7"));
        assert_eq!(addr(&list[1]).0, "ingress-b.example", "not resolved yet");
        assert_eq!(addr(&list[2]).1.as_deref(), Some("10.0.0.4"));
    }
}
