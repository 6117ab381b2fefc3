//! TrafficPermission selection and selector ranking, as tables.

use api::selector::{matches_multi, rank, select_traffic_permission, MultiTags, Rank};
use api::{Resource, Selector, Spec, Tags, TrafficPermissionSpec};
use time::macros::datetime;
use time::OffsetDateTime;

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tp(name: &str, created: OffsetDateTime, destinations: &[&[(&str, &str)]]) -> Resource {
    let mut r = Resource::new(
        name,
        Some("default"),
        Spec::TrafficPermission(TrafficPermissionSpec {
            sources: vec![Selector {
                match_tags: tags(&[("kuma.io/service", "*")]),
            }],
            destinations: destinations
                .iter()
                .map(|d| Selector {
                    match_tags: tags(d),
                })
                .collect(),
        }),
    );
    r.meta.creation_time = created;
    r
}

const T1: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
const T2: OffsetDateTime = datetime!(2026-01-02 0:00 UTC);

#[test]
fn selection_table() {
    let web_v1 = tags(&[("kuma.io/service", "web"), ("version", "v1")]);
    struct Case {
        what: &'static str,
        inbound: Tags,
        policies: Vec<Resource>,
        want: Option<&'static str>,
    }
    let cases = vec![
        Case {
            what: "exact beats wildcard",
            inbound: web_v1.clone(),
            policies: vec![
                tp("wild", T2, &[&[("kuma.io/service", "*")]]),
                tp("exact", T1, &[&[("kuma.io/service", "web")]]),
            ],
            want: Some("exact"),
        },
        Case {
            what: "more matched tags beat fewer, even wildcard ones",
            inbound: web_v1.clone(),
            policies: vec![
                tp("one-exact", T2, &[&[("kuma.io/service", "web")]]),
                tp(
                    "two-wild",
                    T1,
                    &[&[("kuma.io/service", "*"), ("version", "*")]],
                ),
            ],
            want: Some("two-wild"),
        },
        Case {
            what: "equal totals: more exact wins",
            inbound: web_v1.clone(),
            policies: vec![
                tp(
                    "one-exact",
                    T2,
                    &[&[("kuma.io/service", "*"), ("version", "v1")]],
                ),
                tp(
                    "two-exact",
                    T1,
                    &[&[("kuma.io/service", "web"), ("version", "v1")]],
                ),
            ],
            want: Some("two-exact"),
        },
        Case {
            what: "tie: later creation wins",
            inbound: web_v1.clone(),
            policies: vec![
                tp("older", T1, &[&[("kuma.io/service", "web")]]),
                tp("newer", T2, &[&[("kuma.io/service", "web")]]),
            ],
            want: Some("newer"),
        },
        Case {
            what: "tie in time: smaller name wins",
            inbound: web_v1.clone(),
            policies: vec![
                tp("b", T1, &[&[("kuma.io/service", "web")]]),
                tp("a", T1, &[&[("kuma.io/service", "web")]]),
            ],
            want: Some("a"),
        },
        Case {
            what: "no match denies (None)",
            inbound: web_v1.clone(),
            policies: vec![tp("other", T1, &[&[("kuma.io/service", "backend")]])],
            want: None,
        },
        Case {
            what: "a selector key missing from the inbound does not match",
            inbound: tags(&[("kuma.io/service", "web")]),
            policies: vec![tp(
                "needs-version",
                T1,
                &[&[("kuma.io/service", "web"), ("version", "*")]],
            )],
            want: None,
        },
        Case {
            what: "best of several destination selectors counts",
            inbound: web_v1.clone(),
            policies: vec![
                tp(
                    "multi",
                    T1,
                    &[
                        &[("kuma.io/service", "nope")],
                        &[("kuma.io/service", "web"), ("version", "v1")],
                    ],
                ),
                tp("single", T2, &[&[("kuma.io/service", "web")]]),
            ],
            want: Some("multi"),
        },
        Case {
            what: "value mismatch does not match",
            inbound: web_v1.clone(),
            policies: vec![tp(
                "v2",
                T1,
                &[&[("kuma.io/service", "web"), ("version", "v2")]],
            )],
            want: None,
        },
        Case {
            what: "non-TrafficPermission resources are ignored",
            inbound: web_v1.clone(),
            policies: vec![
                Resource::new("default", None, Spec::Mesh(Default::default())),
                tp("only", T1, &[&[("kuma.io/service", "*")]]),
            ],
            want: Some("only"),
        },
        Case {
            what: "no policies at all",
            inbound: web_v1.clone(),
            policies: vec![],
            want: None,
        },
    ];
    for c in cases {
        let got = select_traffic_permission(&c.inbound, &c.policies).map(|r| r.name.as_str());
        assert_eq!(got, c.want, "{}", c.what);
    }
}

#[test]
fn rank_counts_exact_and_wildcard_tags() {
    let inbound = tags(&[("kuma.io/service", "web"), ("version", "v1"), ("zone", "a")]);
    assert_eq!(
        rank(
            &tags(&[("kuma.io/service", "web"), ("version", "*")]),
            &inbound
        ),
        Some(Rank {
            exact: 1,
            wildcard: 1
        })
    );
    assert_eq!(rank(&tags(&[]), &inbound), Some(Rank::default()));
    assert_eq!(rank(&tags(&[("missing", "*")]), &inbound), None);
    assert!(
        Rank {
            exact: 0,
            wildcard: 2
        } > Rank {
            exact: 1,
            wildcard: 0
        }
    );
    assert!(
        Rank {
            exact: 2,
            wildcard: 0
        } > Rank {
            exact: 1,
            wildcard: 1
        }
    );
}

#[test]
fn multi_valued_tags_match_any_value() {
    let mut multi = MultiTags::new();
    multi
        .entry("kuma.io/service".into())
        .or_default()
        .extend(["web".to_string(), "api".to_string()]);
    multi
        .entry("kuma.io/zone".into())
        .or_default()
        .insert("dmz".into());
    assert!(matches_multi(&tags(&[("kuma.io/service", "api")]), &multi));
    assert!(matches_multi(
        &tags(&[("kuma.io/service", "*"), ("kuma.io/zone", "dmz")]),
        &multi
    ));
    assert!(!matches_multi(
        &tags(&[("kuma.io/zone", "internal")]),
        &multi
    ));
    assert!(!matches_multi(&tags(&[("version", "*")]), &multi));
}
