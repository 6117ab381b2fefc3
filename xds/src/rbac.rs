//! TrafficPermission to Envoy RBAC rules, as Kuma does it.
//!
//! The selected policy becomes one RBAC policy named after it, allowing any
//! destination port (`permissions: [any: true]`) to each source selector.
//! A selector becomes the AND of one `authenticated.principal_name` matcher
//! per tag, matched against the URI SANs of the client certificate:
//! `kuma.io/service` as `spiffe://<mesh>/<value>`, any other tag as
//! `kuma://<tag>/<value>`; the value `*` matches by prefix. No policy gives
//! RBAC with no policies, which Envoy reads as "deny everything".

use std::collections::HashMap;

use api::{Resource, Spec, Tags, SERVICE_TAG};
use xds_api::pb::envoy::config::rbac::v3::{
    permission, principal, rbac, Permission, Policy, Principal, Rbac,
};
use xds_api::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};

use crate::tls::{kuma_tag_uri, spiffe_id};

/// RBAC rules for an inbound protected by `policy` (`None`: deny all).
///
/// At most one policy is emitted, so the `policies` map (a `HashMap` in
/// prost, encoded in iteration order) always encodes to the same bytes.
pub(crate) fn rules(mesh: &str, policy: Option<&Resource>) -> Rbac {
    let mut policies = HashMap::new();
    if let Some(resource) = policy {
        if let Spec::TrafficPermission(tp) = &resource.spec {
            let principals = tp
                .sources
                .iter()
                .map(|s| source_principal(mesh, &s.match_tags))
                .collect();
            let any_permission = Permission {
                rule: Some(permission::Rule::Any(true)),
            };
            policies.insert(
                resource.name.clone(),
                Policy {
                    permissions: vec![any_permission],
                    principals,
                    ..Default::default()
                },
            );
        }
    }
    Rbac {
        action: rbac::Action::Allow as i32,
        policies,
        ..Default::default()
    }
}

/// One source selector as a principal. An empty selector (which Kuma's
/// validation refuses) matches any peer rather than producing an empty AND,
/// which Envoy would reject.
fn source_principal(mesh: &str, selector: &Tags) -> Principal {
    if selector.is_empty() {
        return Principal {
            identifier: Some(principal::Identifier::Any(true)),
        };
    }
    let ids = selector
        .iter()
        .map(|(tag, value)| Principal {
            identifier: Some(principal::Identifier::Authenticated(
                principal::Authenticated {
                    principal_name: Some(san_matcher(mesh, tag, value)),
                },
            )),
        })
        .collect();
    Principal {
        identifier: Some(principal::Identifier::AndIds(principal::Set { ids })),
    }
}

fn san_matcher(mesh: &str, tag: &str, value: &str) -> StringMatcher {
    let pattern = match (tag == SERVICE_TAG, value == api::selector::WILDCARD) {
        (true, false) => MatchPattern::Exact(spiffe_id(mesh, value)),
        (true, true) => MatchPattern::Prefix(spiffe_id(mesh, "")),
        (false, false) => MatchPattern::Exact(kuma_tag_uri(tag, value)),
        (false, true) => MatchPattern::Prefix(kuma_tag_uri(tag, "")),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{Selector, TrafficPermissionSpec};

    fn exact_or_prefix(p: &Principal) -> Vec<String> {
        let Some(principal::Identifier::AndIds(set)) = &p.identifier else {
            panic!("not and_ids: {p:?}");
        };
        set.ids
            .iter()
            .map(|id| match &id.identifier {
                Some(principal::Identifier::Authenticated(a)) => {
                    match a
                        .principal_name
                        .as_ref()
                        .and_then(|m| m.match_pattern.as_ref())
                    {
                        Some(MatchPattern::Exact(s)) => format!("exact {s}"),
                        Some(MatchPattern::Prefix(s)) => format!("prefix {s}"),
                        other => panic!("unexpected matcher {other:?}"),
                    }
                }
                other => panic!("unexpected identifier {other:?}"),
            })
            .collect()
    }

    fn tags(pairs: &[(&str, &str)]) -> Tags {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_policy_is_allow_with_no_policies() {
        let r = rules("m", None);
        assert_eq!(r.action, rbac::Action::Allow as i32);
        assert!(r.policies.is_empty());
    }

    #[test]
    fn sources_become_principals_per_tag() {
        let tp = Resource::new(
            "tp",
            Some("m"),
            Spec::TrafficPermission(TrafficPermissionSpec {
                sources: vec![
                    Selector {
                        match_tags: tags(&[("kuma.io/service", "web"), ("kuma.io/zone", "dmz")]),
                    },
                    Selector {
                        match_tags: tags(&[("kuma.io/service", "*"), ("team", "*")]),
                    },
                ],
                destinations: vec![],
            }),
        );
        let r = rules("m", Some(&tp));
        let policy = &r.policies["tp"];
        assert_eq!(
            policy.permissions,
            [Permission {
                rule: Some(permission::Rule::Any(true))
            }]
        );
        assert_eq!(
            exact_or_prefix(&policy.principals[0]),
            ["exact spiffe://m/web", "exact kuma://kuma.io/zone/dmz"]
        );
        assert_eq!(
            exact_or_prefix(&policy.principals[1]),
            ["prefix spiffe://m/", "prefix kuma://team/"]
        );
    }

    #[test]
    fn empty_selector_is_any() {
        assert_eq!(
            source_principal("m", &Tags::new()).identifier,
            Some(principal::Identifier::Any(true))
        );
    }
}
