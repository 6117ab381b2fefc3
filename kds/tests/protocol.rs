//! The publisher and subscriber state machines, message by message.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::kds as wire;
use api::{Resource, ResourceType, Selector, Spec, Tags, TrafficPermissionSpec};
use kds::publisher::{Handled, Publisher, Source};
use kds::snapshot::Entry;
use kds::subscriber::Subscriber;
use kds::{DeltaDiscoveryRequest, ResourceError};

const TP: ResourceType = ResourceType::TrafficPermission;

#[derive(Default)]
struct Map(BTreeMap<(ResourceType, String), Entry>);

impl Map {
    fn put(&mut self, r: &Resource) -> String {
        let name = wire::wire_name(r);
        self.0.insert((r.ty(), name.clone()), Entry::of(r));
        name
    }
    fn remove(&mut self, ty: ResourceType, name: &str) {
        self.0.remove(&(ty, name.to_owned()));
    }
}

impl Source for Map {
    fn get(&self, ty: ResourceType, name: &str) -> Option<Entry> {
        self.0.get(&(ty, name.to_owned())).cloned()
    }
    fn names(&self, ty: ResourceType) -> Vec<(String, Arc<str>, Option<Arc<str>>)> {
        self.0
            .iter()
            .filter(|((t, _), _)| *t == ty)
            .map(|((_, n), e)| (n.clone(), e.version.clone(), e.zone.clone()))
            .collect()
    }
}

fn tp(name: &str, source: &str) -> Resource {
    let sel = |s: &str| Selector {
        match_tags: Tags::from([("kuma.io/service".into(), s.into())]),
    };
    Resource::new(
        name,
        Some("default"),
        Spec::TrafficPermission(TrafficPermissionSpec {
            sources: vec![sel(source)],
            destinations: vec![sel("*")],
        }),
    )
}

fn subscribe(have: &[(&str, &str)]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: wire::type_url(TP),
        initial_resource_versions: have
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn ack(nonce: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: wire::type_url(TP),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn names(resp: &kds::DeltaDiscoveryResponse) -> Vec<&str> {
    resp.resources.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn nothing_is_sent_before_a_subscription() {
    let mut src = Map::default();
    src.put(&tp("a", "web"));
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    assert!(!p.has_pending());
    assert!(p.next_response(&src).is_none());
}

#[test]
fn a_fresh_subscriber_gets_everything_then_only_changes_after_ack() {
    let mut src = Map::default();
    src.put(&tp("a", "web"));
    src.put(&tp("b", "web"));
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    assert_eq!(
        p.handle_request(&subscribe(&[]), &src),
        Ok(Handled::Subscribed(TP))
    );
    let first = p.next_response(&src).unwrap();
    assert_eq!(names(&first), ["default/a", "default/b"]);

    // A change while the response is in flight waits for the ACK.
    let c = src.put(&tp("c", "web"));
    p.changed(TP, &c);
    assert!(p.next_response(&src).is_none());
    assert_eq!(
        p.handle_request(&ack(&first.nonce), &src),
        Ok(Handled::Acked(TP))
    );
    let second = p.next_response(&src).unwrap();
    assert_eq!(names(&second), ["default/c"]);
    assert_eq!(
        p.handle_request(&ack(&second.nonce), &src),
        Ok(Handled::Acked(TP))
    );
    assert_eq!(p.peer_count(TP), 3);

    // A deletion goes out as a removal.
    src.remove(TP, "default/a");
    p.changed(TP, "default/a");
    let third = p.next_response(&src).unwrap();
    assert!(third.resources.is_empty());
    assert_eq!(third.removed_resources, ["default/a"]);
}

#[test]
fn a_reconnecting_subscriber_gets_only_differences_and_missed_deletions() {
    let mut src = Map::default();
    let a = tp("a", "web");
    let b_old = tp("b", "web");
    src.put(&a);
    src.put(&tp("b", "api"));
    let have_a = wire::version(&a);
    let have_b = wire::version(&b_old);
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    p.handle_request(
        &subscribe(&[
            ("default/a", &have_a),
            ("default/b", &have_b),
            ("default/gone", "123"),
        ]),
        &src,
    )
    .unwrap();
    let resp = p.next_response(&src).unwrap();
    assert_eq!(names(&resp), ["default/b"], "a is unchanged, b changed");
    assert_eq!(resp.removed_resources, ["default/gone"]);
}

#[test]
fn responses_are_batched_by_size() {
    let mut src = Map::default();
    for i in 0..50 {
        src.put(&tp(&format!("p{i:02}"), "web"));
    }
    let one = Entry::of(&tp("p00", "web")).payload.len();
    let mut p = Publisher::new(&[TP], None, one * 10);
    p.handle_request(&subscribe(&[]), &src).unwrap();
    let mut total = 0;
    let mut batches = 0;
    while let Some(resp) = p.next_response(&src) {
        assert!(
            resp.resources.len() <= 10,
            "batch of {}",
            resp.resources.len()
        );
        total += resp.resources.len();
        batches += 1;
        p.handle_request(&ack(&resp.nonce), &src).unwrap();
    }
    assert_eq!(total, 50);
    assert!(batches >= 5);
}

#[test]
fn a_nack_rejects_only_the_listed_resources_until_they_change() {
    let mut src = Map::default();
    src.put(&tp("good", "web"));
    src.put(&tp("bad", "web"));
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    p.handle_request(&subscribe(&[]), &src).unwrap();
    let resp = p.next_response(&src).unwrap();
    let sub = Subscriber::new("zone-1", "test", "0", &[TP], 1 << 20);
    let nack = sub.answer(
        TP,
        &resp.nonce,
        &[ResourceError {
            name: "default/bad".into(),
            reason: "nope".into(),
        }],
    );
    assert!(
        matches!(p.handle_request(&nack, &src), Ok(Handled::Nacked(TP, m)) if m.contains("nope"))
    );
    assert_eq!(p.peer_count(TP), 1, "good was applied");
    assert_eq!(p.stats()["TrafficPermission"].nacks, 1);

    // Unchanged, the rejected version is not resent.
    p.changed(TP, "default/bad");
    assert!(p.next_response(&src).is_none());
    // Changed, it is.
    src.put(&tp("bad", "fixed"));
    p.changed(TP, "default/bad");
    assert_eq!(names(&p.next_response(&src).unwrap()), ["default/bad"]);
}

#[test]
fn stale_acks_are_ignored_and_unknown_types_refused() {
    let mut src = Map::default();
    src.put(&tp("a", "web"));
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    p.handle_request(&subscribe(&[]), &src).unwrap();
    let resp = p.next_response(&src).unwrap();
    assert_eq!(p.handle_request(&ack("999"), &src), Ok(Handled::Stale(TP)));
    assert_eq!(
        p.handle_request(&ack(&resp.nonce), &src),
        Ok(Handled::Acked(TP))
    );
    let mut other = subscribe(&[]);
    other.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    assert!(p.handle_request(&other, &src).is_err());
}

#[test]
fn the_peers_own_zone_is_not_sent_back() {
    let mut src = Map::default();
    let mut mine = tp("mine", "web");
    mine.labels.insert(api::ZONE_TAG.into(), "zone-1".into());
    let mut theirs = tp("theirs", "web");
    theirs.labels.insert(api::ZONE_TAG.into(), "zone-2".into());
    src.put(&mine);
    src.put(&theirs);
    src.put(&tp("global", "web"));
    let mut p = Publisher::new(&[TP], Some("zone-1"), 1 << 20);
    p.handle_request(&subscribe(&[]), &src).unwrap();
    assert_eq!(
        names(&p.next_response(&src).unwrap()),
        ["default/global", "default/theirs"]
    );
}

#[test]
fn the_subscriber_decodes_validates_and_answers() {
    let mut src = Map::default();
    src.put(&tp("ok", "web"));
    src.put(&tp("invalid", "bad value!"));
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    p.handle_request(&subscribe(&[]), &src).unwrap();
    let mut resp = p.next_response(&src).unwrap();
    // A resource whose wire name disagrees with its payload is refused too.
    let mut renamed = resp.resources[0].clone();
    renamed.name = "default/other".into();
    resp.resources.push(renamed);

    let sub = Subscriber::new("zone-1", "zone-cp", "1.0", &[TP], 1 << 20);
    let have = HashMap::from([(
        TP,
        HashMap::from([("default/x".to_string(), "v".to_string())]),
    )]);
    let init = sub.initial_requests(&have);
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].initial_resource_versions.len(), 1);
    assert_eq!(init[0].node.as_ref().unwrap().id, "zone-1");

    let update = sub.decode(resp).unwrap();
    let ok: Vec<&str> = update.upserts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(ok, ["default/ok"]);
    let bad: Vec<&str> = update.errors.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(bad, ["default/invalid", "default/other"]);
    let nack = sub.answer(TP, &update.nonce, &update.errors);
    let detail = nack.error_detail.unwrap();
    assert!(detail.message.contains("default/invalid"));
    assert!(sub.answer(TP, "1", &[]).error_detail.is_none());

    let tiny = Subscriber::new("z", "a", "v", &[TP], 10);
    let mut p = Publisher::new(&[TP], None, 1 << 20);
    p.handle_request(&subscribe(&[]), &src).unwrap();
    let update = tiny.decode(p.next_response(&src).unwrap()).unwrap();
    assert!(update.upserts.is_empty());
    assert!(update.errors[0].reason.contains("over the limit"));
}
