//! State-of-the-world ADS to one Envoy, without I/O.
//!
//! Per type the stream remembers what it last sent (version, nonce) and what
//! Envoy accepted. A request with an empty or unknown nonce is a
//! subscription and gets the current resources; a request echoing the last
//! nonce is an ACK, or a NACK when it carries `error_detail`, in which case
//! Envoy keeps its last good config and we record the reason and send
//! nothing more for that type until the config changes.

use std::collections::BTreeMap;

use xds_api::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use super::snapshot::ProxySnapshot;

/// Envoy's order: clusters before their endpoints, secrets before the
/// listeners that use them.
pub const TYPE_ORDER: [&str; 4] = [
    xds::type_urls::CLUSTER,
    xds::type_urls::ENDPOINT,
    xds::type_urls::SECRET,
    xds::type_urls::LISTENER,
];

#[derive(Debug, Default, Clone)]
struct TypeState {
    subscribed: bool,
    sent_version: Option<String>,
    sent_nonce: Option<String>,
    acked_version: Option<String>,
}

/// What a request meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Subscribed(String),
    Acked {
        type_url: String,
        version: String,
    },
    Nacked {
        type_url: String,
        version: String,
        reason: String,
    },
    Stale,
}

#[derive(Default)]
pub struct SotwStream {
    types: BTreeMap<String, TypeState>,
    next_nonce: u64,
}

impl SotwStream {
    pub fn handle_request(&mut self, req: &DiscoveryRequest) -> Event {
        let st = self.types.entry(req.type_url.clone()).or_default();
        let echoes = !req.response_nonce.is_empty()
            && st.sent_nonce.as_deref() == Some(req.response_nonce.as_str());
        if !echoes {
            if !req.response_nonce.is_empty() && st.subscribed {
                return Event::Stale;
            }
            // A (re)subscription: Envoy may already hold a version from
            // before a reconnect; send the current config regardless.
            st.subscribed = true;
            st.sent_version = None;
            st.sent_nonce = None;
            return Event::Subscribed(req.type_url.clone());
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

    /// Responses for every subscribed type whose content differs from what
    /// was last sent, in [`TYPE_ORDER`].
    pub fn responses(&mut self, snap: &ProxySnapshot) -> Vec<DiscoveryResponse> {
        let mut out = Vec::new();
        for type_url in TYPE_ORDER {
            let Some(st) = self.types.get_mut(type_url) else {
                continue;
            };
            if !st.subscribed {
                continue;
            }
            let empty = Default::default();
            let res = snap.get(type_url).unwrap_or(&empty);
            let version = if res.version.is_empty() {
                "empty".to_owned()
            } else {
                res.version.clone()
            };
            if st.sent_version.as_deref() == Some(version.as_str()) {
                continue;
            }
            self.next_nonce += 1;
            let nonce = self.next_nonce.to_string();
            st.sent_version = Some(version.clone());
            st.sent_nonce = Some(nonce.clone());
            out.push(DiscoveryResponse {
                version_info: version,
                resources: res.resources.values().map(|a| (**a).clone()).collect(),
                type_url: type_url.to_owned(),
                nonce,
                ..Default::default()
            });
        }
        out
    }

    /// The last version Envoy accepted for each type.
    pub fn acked(&self) -> BTreeMap<String, String> {
        self.types
            .iter()
            .filter_map(|(t, s)| s.acked_version.clone().map(|v| (t.clone(), v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xds_api::pb::google::protobuf::Any;
    use xds_api::pb::google::rpc::Status;

    fn snap(version_bytes: u8) -> ProxySnapshot {
        ProxySnapshot::from_resources([
            (
                xds::type_urls::CLUSTER.to_owned(),
                "c".to_owned(),
                Any {
                    type_url: "t".into(),
                    value: vec![version_bytes],
                },
            ),
            (
                xds::type_urls::LISTENER.to_owned(),
                "l".to_owned(),
                Any {
                    type_url: "t".into(),
                    value: vec![1],
                },
            ),
        ])
    }

    fn req(type_url: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    #[test]
    fn subscribe_ack_and_only_changes_are_resent() {
        let mut s = SotwStream::default();
        assert!(
            s.responses(&snap(1)).is_empty(),
            "nothing before a subscription"
        );
        assert_eq!(
            s.handle_request(&req(xds::type_urls::CLUSTER, "")),
            Event::Subscribed(xds::type_urls::CLUSTER.into())
        );
        let r = s.responses(&snap(1));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].resources.len(), 1);
        assert!(matches!(
            s.handle_request(&req(xds::type_urls::CLUSTER, &r[0].nonce)),
            Event::Acked { .. }
        ));
        assert!(
            s.responses(&snap(1)).is_empty(),
            "unchanged config is not resent"
        );
        let r2 = s.responses(&snap(2));
        assert_eq!(r2.len(), 1);
        assert_ne!(r2[0].version_info, r[0].version_info);
        assert_eq!(
            s.handle_request(&req(xds::type_urls::CLUSTER, "999")),
            Event::Stale
        );
    }

    #[test]
    fn a_nack_is_reported_and_not_retried_until_the_config_changes() {
        let mut s = SotwStream::default();
        s.handle_request(&req(xds::type_urls::LISTENER, ""));
        let r = s.responses(&snap(1));
        let mut nack = req(xds::type_urls::LISTENER, &r[0].nonce);
        nack.error_detail = Some(Status {
            code: 3,
            message: "bad listener".into(),
            details: vec![],
        });
        assert!(
            matches!(s.handle_request(&nack), Event::Nacked { reason, .. } if reason == "bad listener")
        );
        assert!(s.responses(&snap(1)).is_empty());
        assert!(s.acked().is_empty());
    }

    #[test]
    fn types_go_out_in_make_before_break_order() {
        let mut s = SotwStream::default();
        s.handle_request(&req(xds::type_urls::LISTENER, ""));
        s.handle_request(&req(xds::type_urls::CLUSTER, ""));
        let types: Vec<String> = s
            .responses(&snap(1))
            .into_iter()
            .map(|r| r.type_url)
            .collect();
        assert_eq!(types, [xds::type_urls::CLUSTER, xds::type_urls::LISTENER]);
    }
}
