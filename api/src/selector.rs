//! Tag selectors and Kuma's policy ranking.
//!
//! A selector matches a set of tags when every selector key is present and its
//! value is equal or the selector value is `*`. A match is ranked by the number
//! of matched tags, then by how many of them matched exactly. Among policies of
//! equal rank the later-created wins, then the smaller name, as in Kuma.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use crate::resource::Resource;
use crate::spec::{Spec, Tags};

/// The wildcard tag value.
pub const WILDCARD: &str = "*";

/// How well a selector matched: more tags first, then more exact tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rank {
    pub exact: usize,
    pub wildcard: usize,
}

impl Rank {
    pub fn total(self) -> usize {
        self.exact + self.wildcard
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        self.total()
            .cmp(&other.total())
            .then(self.exact.cmp(&other.exact))
    }
}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Ranks `selector` against single-valued `tags`; `None` when it does not match.
pub fn rank(selector: &Tags, tags: &Tags) -> Option<Rank> {
    let mut r = Rank::default();
    for (k, v) in selector {
        let actual = tags.get(k)?;
        if v == WILDCARD {
            r.wildcard += 1;
        } else if v == actual {
            r.exact += 1;
        } else {
            return None;
        }
    }
    Some(r)
}

pub fn matches(selector: &Tags, tags: &Tags) -> bool {
    rank(selector, tags).is_some()
}

/// Tags where one key may carry several values, as a dataplane with several
/// inbounds (or its certificate) does.
pub type MultiTags = BTreeMap<String, BTreeSet<String>>;

/// Whether `selector` matches multi-valued `tags`: every key present, and the
/// value `*` or one of the values.
pub fn matches_multi(selector: &Tags, tags: &MultiTags) -> bool {
    selector.iter().all(|(k, v)| match tags.get(k) {
        None => false,
        Some(values) => v == WILDCARD || values.contains(v),
    })
}

/// Picks the TrafficPermission that applies to an inbound with `inbound_tags`:
/// the best-ranked destination match, ties to the later creation time, then to
/// the smaller name. Resources that are not TrafficPermissions are ignored.
/// `None` means no policy matches, which denies all traffic to the inbound.
pub fn select_traffic_permission<'a>(
    inbound_tags: &Tags,
    policies: impl IntoIterator<Item = &'a Resource>,
) -> Option<&'a Resource> {
    let mut best: Option<(Rank, &'a Resource)> = None;
    for policy in policies {
        let Spec::TrafficPermission(tp) = &policy.spec else {
            continue;
        };
        let Some(r) = tp
            .destinations
            .iter()
            .filter_map(|d| rank(&d.match_tags, inbound_tags))
            .max()
        else {
            continue;
        };
        let better = match &best {
            None => true,
            Some((best_rank, current)) => {
                r.cmp(best_rank)
                    .then_with(|| policy.meta.creation_time.cmp(&current.meta.creation_time))
                    .then_with(|| current.name.cmp(&policy.name))
                    == Ordering::Greater
            }
        };
        if better {
            best = Some((r, policy));
        }
    }
    best.map(|(_, p)| p)
}
