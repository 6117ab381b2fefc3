//! Incremental (delta) ADS to one Envoy, without I/O.
//!
//! Per type the stream remembers what Envoy subscribed to (every resource
//! for a wildcard subscription, which Envoy makes for listeners and
//! clusters; named resources for endpoints and secrets) and what Envoy
//! holds: each resource's version, a hash of its bytes, as last sent or as
//! Envoy reported in `initial_resource_versions` when it reconnected. A
//! response carries only the resources whose version differs from what
//! Envoy holds, and names in `removed_resources` those it holds that left
//! the snapshot; `system_version_info` is the type's snapshot version.
//!
//! A request echoing the last nonce is an ACK, or a NACK when it carries
//! `error_detail`: Envoy keeps its last good config, we record the reason,
//! and since what was sent counts as held, the rejected content is not sent
//! again until it changes. Subscription changes are applied from every
//! request, whatever its nonce.

use std::collections::{BTreeMap, BTreeSet};

use xds_api::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use xds_api::pb::google::protobuf::Any;

use super::snapshot::{ProxySnapshot, TypeResources};
use super::sotw::TYPE_ORDER;

pub use super::sotw::Event;

/// The resource name that subscribes to every resource of a type.
pub const WILDCARD: &str = "*";

#[derive(Debug, Default)]
struct TypeState {
    /// Envoy wants every resource of the type.
    wildcard: bool,
    /// Names Envoy subscribed to explicitly.
    names: BTreeSet<String>,
    /// What Envoy holds as far as this stream knows: name to version.
    held: BTreeMap<String, String>,
    /// The snapshot version `held` was last reconciled with; `None` after a
    /// subscription change.
    synced: Option<String>,
    /// A new subscription is answered even when nothing is to be sent, so
    /// that Envoy's initial fetch for a wildcard type completes.
    respond: bool,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    acked_version: Option<String>,
}

impl TypeState {
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

#[derive(Default)]
pub struct DeltaStream {
    /// Types Envoy sent a request for on this stream.
    types: BTreeMap<String, TypeState>,
    next_nonce: u64,
}

impl DeltaStream {
    pub fn handle_request(&mut self, req: &DeltaDiscoveryRequest) -> Event {
        let first = !self.types.contains_key(&req.type_url);
        let st = self.types.entry(req.type_url.clone()).or_default();
        if first {
            // Envoy reconnecting reports what it still holds; only what
            // differs from it is sent. An empty first subscription is the
            // (legacy) wildcard.
            st.held.extend(
                req.initial_resource_versions
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone())),
            );
            if req.resource_names_subscribe.is_empty() {
                st.wildcard = true;
            }
            st.respond = true;
            st.synced = None;
        }
        for name in &req.resource_names_subscribe {
            if name == WILDCARD {
                st.wildcard = true;
            } else {
                st.names.insert(name.clone());
            }
            st.respond = true;
            st.synced = None;
        }
        for name in &req.resource_names_unsubscribe {
            if name == WILDCARD {
                st.wildcard = false;
            } else {
                st.names.remove(name);
            }
            st.synced = None;
        }
        if !req.resource_names_unsubscribe.is_empty() {
            // Envoy drops what it no longer subscribes to.
            let (wildcard, names) = (st.wildcard, &st.names);
            st.held.retain(|n, _| wildcard || names.contains(n));
        }

        if req.response_nonce.is_empty() {
            return Event::Subscribed(req.type_url.clone());
        }
        if st.sent_nonce.as_deref() != Some(req.response_nonce.as_str()) {
            return Event::Stale;
        }
        st.sent_nonce = None;
        let version = st.sent_version.clone().unwrap_or_default();
        match &req.error_detail {
            Some(status) => Event::Nacked {
                type_url: req.type_url.clone(),
                version,
                reason: status.message.clone(),
            },
            None => {
                st.acked_version = Some(version.clone());
                Event::Acked {
                    type_url: req.type_url.clone(),
                    version,
                }
            }
        }
    }

    /// For every subscribed type, in [`TYPE_ORDER`], a response with the
    /// resources Envoy lacks or holds at another version and the names of
    /// those it holds that are gone; none for a type with nothing to say.
    pub fn responses(&mut self, snap: &ProxySnapshot) -> Vec<DeltaDiscoveryResponse> {
        let empty = TypeResources::default();
        let mut out = Vec::new();
        for type_url in TYPE_ORDER {
            let Some(st) = self.types.get_mut(type_url) else {
                continue;
            };
            let res = snap.get(type_url).unwrap_or(&empty);
            let version = if res.version.is_empty() {
                "empty".to_owned()
            } else {
                res.version.clone()
            };
            if !st.respond && st.synced.as_deref() == Some(version.as_str()) {
                continue;
            }
            let mut resources = Vec::new();
            for (name, any) in &res.resources {
                if !st.wants(name) {
                    continue;
                }
                let v = resource_version(any);
                if st.held.get(name) == Some(&v) {
                    continue;
                }
                st.held.insert(name.clone(), v.clone());
                resources.push(Resource {
                    name: name.clone(),
                    version: v,
                    resource: Some((**any).clone()),
                    ..Default::default()
                });
            }
            let removed: Vec<String> = st
                .held
                .keys()
                .filter(|n| !res.resources.contains_key(*n))
                .cloned()
                .collect();
            for name in &removed {
                st.held.remove(name);
            }
            st.synced = Some(version.clone());
            if resources.is_empty() && removed.is_empty() && !st.respond {
                continue;
            }
            st.respond = false;
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            st.sent_version = Some(version.clone());
            st.sent_nonce = Some(nonce.clone());
            out.push(DeltaDiscoveryResponse {
                system_version_info: version,
                resources,
                type_url: type_url.to_owned(),
                removed_resources: removed,
                nonce,
                ..Default::default()
            });
        }
        out
    }

    /// The last snapshot version Envoy accepted for each type.
    pub fn acked(&self) -> BTreeMap<String, String> {
        self.types
            .iter()
            .filter_map(|(t, s)| s.acked_version.clone().map(|v| (t.clone(), v)))
            .collect()
    }
}

/// A resource's version: FNV-1a over its bytes, so equal content has an
/// equal version on every stream and across reconnects.
fn resource_version(any: &Any) -> String {
    let h = any.value.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds::type_urls::{CLUSTER, ENDPOINT, LISTENER, SECRET};
    use xds_api::pb::google::rpc::Status;

    fn any(bytes: &[u8]) -> Any {
        Any {
            type_url: "t".into(),
            value: bytes.to_vec(),
        }
    }

    fn snap(items: &[(&str, &str, &[u8])]) -> ProxySnapshot {
        ProxySnapshot::from_resources(
            items
                .iter()
                .map(|(t, n, b)| ((*t).to_owned(), (*n).to_owned(), any(b))),
        )
    }

    fn req(type_url: &str, nonce: &str, subscribe: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            resource_names_subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn unsubscribe(type_url: &str, nonce: &str, names: &[&str]) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            resource_names_unsubscribe: names.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        }
    }

    fn nack(type_url: &str, nonce: &str, reason: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(Status {
                code: 3,
                message: reason.into(),
                details: vec![],
            }),
            ..req(type_url, nonce, &[])
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    fn one(mut r: Vec<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
        assert_eq!(r.len(), 1, "{r:?}");
        r.remove(0)
    }

    #[test]
    fn wildcard_subscribe_ack_and_only_changes_are_resent() {
        let mut s = DeltaStream::default();
        let v1 = snap(&[(CLUSTER, "a", b"1"), (CLUSTER, "b", b"1")]);
        assert!(s.responses(&v1).is_empty(), "nothing before a subscription");
        assert_eq!(
            s.handle_request(&req(CLUSTER, "", &[])),
            Event::Subscribed(CLUSTER.into())
        );
        let r = one(s.responses(&v1));
        assert_eq!(r.type_url, CLUSTER);
        assert_eq!(names(&r), ["a", "b"]);
        assert_eq!(r.system_version_info, v1.types[CLUSTER].version);
        assert!(r.resources.iter().all(|x| x.resource.is_some()));
        assert_eq!(r.resources[0].version, resource_version(&any(b"1")));
        assert!(r.removed_resources.is_empty());
        assert_eq!(
            s.handle_request(&req(CLUSTER, &r.nonce, &[])),
            Event::Acked {
                type_url: CLUSTER.into(),
                version: r.system_version_info.clone()
            }
        );
        assert_eq!(s.acked()[CLUSTER], r.system_version_info);
        assert!(
            s.responses(&v1).is_empty(),
            "unchanged config is not resent"
        );

        // One resource changes, one is added: only those two go out.
        let v2 = snap(&[
            (CLUSTER, "a", b"1"),
            (CLUSTER, "b", b"2"),
            (CLUSTER, "c", b"1"),
        ]);
        let r2 = one(s.responses(&v2));
        assert_eq!(names(&r2), ["b", "c"]);
        assert_ne!(r2.nonce, r.nonce);
        assert_eq!(r2.system_version_info, v2.types[CLUSTER].version);
        assert!(s.responses(&v2).is_empty());
        assert_eq!(
            s.handle_request(&req(CLUSTER, &r.nonce, &[])),
            Event::Stale,
            "an old nonce acknowledges nothing"
        );
        assert_eq!(s.acked()[CLUSTER], r.system_version_info);
        s.handle_request(&req(CLUSTER, &r2.nonce, &[]));
        assert_eq!(s.acked()[CLUSTER], r2.system_version_info);
    }

    #[test]
    fn a_resource_that_leaves_the_snapshot_is_removed_once() {
        let mut s = DeltaStream::default();
        s.handle_request(&req(LISTENER, "", &[]));
        let r = one(s.responses(&snap(&[(LISTENER, "in", b"1"), (LISTENER, "out", b"1")])));
        s.handle_request(&req(LISTENER, &r.nonce, &[]));
        let v2 = snap(&[(LISTENER, "in", b"1")]);
        let r2 = one(s.responses(&v2));
        assert!(r2.resources.is_empty());
        assert_eq!(r2.removed_resources, ["out"]);
        assert!(s.responses(&v2).is_empty());
        // Every resource gone: the type is absent from the snapshot.
        let r3 = one(s.responses(&ProxySnapshot::default()));
        assert_eq!(r3.removed_resources, ["in"]);
        assert_eq!(r3.system_version_info, "empty");
        // It comes back: sent again.
        let r4 = one(s.responses(&v2));
        assert_eq!(names(&r4), ["in"]);
    }

    #[test]
    fn a_nack_is_reported_and_not_retried_until_the_config_changes() {
        let mut s = DeltaStream::default();
        s.handle_request(&req(LISTENER, "", &[]));
        let v1 = snap(&[(LISTENER, "l", b"1"), (LISTENER, "m", b"1")]);
        let r = one(s.responses(&v1));
        assert!(matches!(
            s.handle_request(&nack(LISTENER, &r.nonce, "bad listener")),
            Event::Nacked { reason, version, .. }
                if reason == "bad listener" && version == r.system_version_info
        ));
        assert!(s.acked().is_empty());
        assert!(
            s.responses(&v1).is_empty(),
            "the same content is not retried"
        );
        // A fix to one listener sends just that one.
        let v2 = snap(&[(LISTENER, "l", b"2"), (LISTENER, "m", b"1")]);
        let r2 = one(s.responses(&v2));
        assert_eq!(names(&r2), ["l"]);
        s.handle_request(&req(LISTENER, &r2.nonce, &[]));
        assert_eq!(s.acked()[LISTENER], v2.types[LISTENER].version);
    }

    #[test]
    fn initial_resource_versions_spare_what_envoy_already_holds() {
        let v = snap(&[
            (CLUSTER, "same", b"1"),
            (CLUSTER, "changed", b"2"),
            (CLUSTER, "new", b"1"),
        ]);
        let mut first = req(CLUSTER, "", &[]);
        first.initial_resource_versions = [
            ("same".to_owned(), resource_version(&any(b"1"))),
            ("changed".to_owned(), resource_version(&any(b"1"))),
            ("gone".to_owned(), resource_version(&any(b"1"))),
        ]
        .into_iter()
        .collect();
        let mut s = DeltaStream::default();
        s.handle_request(&first);
        let r = one(s.responses(&v));
        assert_eq!(names(&r), ["changed", "new"]);
        assert_eq!(r.removed_resources, ["gone"]);
    }

    #[test]
    fn a_reconnect_that_holds_everything_still_gets_an_empty_answer() {
        let v = snap(&[(CLUSTER, "a", b"1")]);
        let mut first = req(CLUSTER, "", &[WILDCARD]);
        first.initial_resource_versions = [("a".to_owned(), resource_version(&any(b"1")))]
            .into_iter()
            .collect();
        let mut s = DeltaStream::default();
        s.handle_request(&first);
        let r = one(s.responses(&v));
        assert!(r.resources.is_empty() && r.removed_resources.is_empty());
        assert_eq!(r.system_version_info, v.types[CLUSTER].version);
        s.handle_request(&req(CLUSTER, &r.nonce, &[]));
        assert_eq!(s.acked()[CLUSTER], v.types[CLUSTER].version);
        assert!(s.responses(&v).is_empty());
    }

    #[test]
    fn a_wildcard_type_without_resources_is_answered_once() {
        let mut s = DeltaStream::default();
        s.handle_request(&req(LISTENER, "", &[]));
        let r = one(s.responses(&ProxySnapshot::default()));
        assert!(r.resources.is_empty());
        assert_eq!(r.system_version_info, "empty");
        assert!(s.responses(&ProxySnapshot::default()).is_empty());
    }

    #[test]
    fn named_subscriptions_get_only_their_resources() {
        let v1 = snap(&[
            (ENDPOINT, "backend", b"1"),
            (ENDPOINT, "db", b"1"),
            (SECRET, "cert", b"1"),
        ]);
        let mut s = DeltaStream::default();
        s.handle_request(&req(ENDPOINT, "", &["backend"]));
        let r = one(s.responses(&v1));
        assert_eq!(names(&r), ["backend"]);
        // Subscribing one more name, along with the ACK, sends just it.
        assert!(matches!(
            s.handle_request(&req(ENDPOINT, &r.nonce, &["db"])),
            Event::Acked { .. }
        ));
        let r2 = one(s.responses(&v1));
        assert_eq!(names(&r2), ["db"]);
        // A name that does not exist is not claimed; it is sent once it does.
        s.handle_request(&req(ENDPOINT, &r2.nonce, &["later"]));
        let r3 = one(s.responses(&v1));
        assert!(r3.resources.is_empty() && r3.removed_resources.is_empty());
        let v2 = snap(&[
            (ENDPOINT, "backend", b"1"),
            (ENDPOINT, "db", b"1"),
            (ENDPOINT, "later", b"1"),
        ]);
        assert_eq!(names(&one(s.responses(&v2))), ["later"]);
    }

    #[test]
    fn unsubscribed_resources_are_no_longer_sent_nor_removed() {
        let v1 = snap(&[(ENDPOINT, "a", b"1"), (ENDPOINT, "b", b"1")]);
        let mut s = DeltaStream::default();
        s.handle_request(&req(ENDPOINT, "", &["a", "b"]));
        let r = one(s.responses(&v1));
        assert_eq!(names(&r), ["a", "b"]);
        s.handle_request(&unsubscribe(ENDPOINT, &r.nonce, &["b"]));
        assert!(s.responses(&v1).is_empty());
        let v2 = snap(&[(ENDPOINT, "a", b"1"), (ENDPOINT, "b", b"2")]);
        assert!(s.responses(&v2).is_empty(), "b is not wanted any more");
        let v3 = snap(&[(ENDPOINT, "a", b"1")]);
        assert!(s.responses(&v3).is_empty(), "Envoy dropped b itself");
        // Subscribing again sends it afresh.
        s.handle_request(&req(ENDPOINT, "", &["b"]));
        assert_eq!(names(&one(s.responses(&v2))), ["b"]);
    }

    #[test]
    fn explicit_wildcard_and_its_unsubscription() {
        let v = snap(&[(CLUSTER, "a", b"1"), (CLUSTER, "b", b"1")]);
        let mut s = DeltaStream::default();
        s.handle_request(&req(CLUSTER, "", &[WILDCARD, "a"]));
        let r = one(s.responses(&v));
        assert_eq!(names(&r), ["a", "b"]);
        s.handle_request(&unsubscribe(CLUSTER, &r.nonce, &[WILDCARD]));
        let v2 = snap(&[(CLUSTER, "a", b"2"), (CLUSTER, "b", b"2")]);
        assert_eq!(
            names(&one(s.responses(&v2))),
            ["a"],
            "only the explicit name is still wanted"
        );
    }

    #[test]
    fn subscriptions_apply_even_with_a_stale_nonce() {
        let v = snap(&[(SECRET, "a", b"1"), (SECRET, "b", b"1")]);
        let mut s = DeltaStream::default();
        s.handle_request(&req(SECRET, "", &["a"]));
        let r = one(s.responses(&v));
        let r2 = one(s.responses(&snap(&[(SECRET, "a", b"2"), (SECRET, "b", b"1")])));
        assert_eq!(
            s.handle_request(&req(SECRET, &r.nonce, &["b"])),
            Event::Stale
        );
        assert_eq!(names(&one(s.responses(&v))), ["a", "b"]);
        assert_ne!(r.nonce, r2.nonce);
    }

    #[test]
    fn types_go_out_in_make_before_break_order() {
        let v = snap(&[
            (LISTENER, "l", b"1"),
            (SECRET, "s", b"1"),
            (ENDPOINT, "e", b"1"),
            (CLUSTER, "c", b"1"),
        ]);
        let mut s = DeltaStream::default();
        s.handle_request(&req(LISTENER, "", &[]));
        s.handle_request(&req(SECRET, "", &["s"]));
        s.handle_request(&req(ENDPOINT, "", &["e"]));
        s.handle_request(&req(CLUSTER, "", &[]));
        let types: Vec<String> = s.responses(&v).into_iter().map(|r| r.type_url).collect();
        assert_eq!(types, [CLUSTER, ENDPOINT, SECRET, LISTENER]);
    }

    #[test]
    fn unknown_types_are_ignored() {
        let mut s = DeltaStream::default();
        let t = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
        assert_eq!(
            s.handle_request(&req(t, "", &[])),
            Event::Subscribed(t.into())
        );
        assert!(s.responses(&snap(&[(CLUSTER, "c", b"1")])).is_empty());
    }
}
