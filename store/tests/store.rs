use api::{Resource, ResourceKey, ResourceType, Selector, Spec, Tags, TrafficPermissionSpec};
use store::{ChangeKind, Op, Outcome, Precondition, Store, StoreError};

fn mesh(name: &str) -> Resource {
    Resource::new(name, None, Spec::Mesh(Default::default()))
}

fn tp(mesh: &str, name: &str, source: &str) -> Resource {
    let sel = |svc: &str| Selector {
        match_tags: Tags::from([("kuma.io/service".to_string(), svc.to_string())]),
    };
    Resource::new(
        name,
        Some(mesh),
        Spec::TrafficPermission(TrafficPermissionSpec {
            sources: vec![sel(source)],
            destinations: vec![sel("*")],
        }),
    )
}

fn tp_key(mesh: &str, name: &str) -> ResourceKey {
    ResourceKey::scoped(ResourceType::TrafficPermission, mesh, name)
}

#[test]
fn put_creates_then_updates_with_growing_version() {
    let s = Store::temporary().unwrap();
    assert!(matches!(
        s.put(mesh("default"), Precondition::None).unwrap(),
        Outcome::Created(_)
    ));
    let created = s
        .put(tp("default", "a", "web"), Precondition::None)
        .unwrap();
    assert!(matches!(created, Outcome::Created(_)));
    assert_eq!(created.resource().meta.version, 1);

    let updated = s
        .put(tp("default", "a", "api"), Precondition::Version(1))
        .unwrap();
    assert!(matches!(updated, Outcome::Updated(_)));
    let got = s.get(&tp_key("default", "a")).unwrap().unwrap();
    assert_eq!(got.meta.version, 2);
    assert_eq!(
        got.meta.creation_time,
        created.resource().meta.creation_time
    );
    assert!(got.meta.modification_time >= got.meta.creation_time);
    assert_eq!(got.spec, tp("default", "a", "api").spec);
    assert_eq!(s.revision().unwrap(), 3);
}

#[test]
fn stale_version_and_duplicate_create_conflict() {
    let s = Store::temporary().unwrap();
    s.put(mesh("m"), Precondition::None).unwrap();
    s.put(tp("m", "a", "web"), Precondition::None).unwrap();
    s.put(tp("m", "a", "web"), Precondition::None).unwrap();
    let err = s
        .put(tp("m", "a", "x"), Precondition::Version(1))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Conflict {
                expected: 1,
                actual: Some(2),
                ..
            }
        ),
        "{err}"
    );
    let err = s.put(tp("m", "a", "x"), Precondition::Absent).unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");
    let err = s
        .put(tp("m", "new", "x"), Precondition::Version(1))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: None, .. }),
        "{err}"
    );
    assert_eq!(
        s.get(&tp_key("m", "a")).unwrap().unwrap().spec,
        tp("m", "a", "web").spec
    );
}

#[test]
fn policy_needs_its_mesh() {
    let s = Store::temporary().unwrap();
    let err = s
        .put(tp("nope", "a", "web"), Precondition::None)
        .unwrap_err();
    assert!(
        matches!(err, StoreError::MeshNotFound(ref m) if m == "nope"),
        "{err}"
    );
    assert_eq!(s.count(ResourceType::TrafficPermission), 0);
}

#[test]
fn deleting_a_mesh_deletes_its_policies_only() {
    let s = Store::temporary().unwrap();
    s.put(mesh("a"), Precondition::None).unwrap();
    s.put(mesh("b"), Precondition::None).unwrap();
    for i in 0..3 {
        s.put(tp("a", &format!("p{i}"), "web"), Precondition::None)
            .unwrap();
    }
    s.put(tp("b", "keep", "web"), Precondition::None).unwrap();
    let mut watch = s.watch();
    s.delete(&ResourceKey::global(ResourceType::Mesh, "a"), None)
        .unwrap();
    assert!(s
        .list(ResourceType::TrafficPermission, Some("a"))
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list(ResourceType::TrafficPermission, Some("b"))
            .unwrap()
            .len(),
        1
    );
    let mut deleted = Vec::new();
    while let Ok(c) = watch.try_recv() {
        assert!(matches!(c.kind, ChangeKind::Delete(_)));
        deleted.push(c.kind.resource().name.clone());
    }
    assert_eq!(deleted, ["a", "p0", "p1", "p2"]);
}

#[test]
fn failed_batch_writes_nothing() {
    let s = Store::temporary().unwrap();
    s.put(mesh("m"), Precondition::None).unwrap();
    let rev = s.revision().unwrap();
    let err = s
        .apply(vec![
            Op::Put(tp("m", "ok", "web"), Precondition::None),
            Op::Put(tp("missing", "bad", "web"), Precondition::None),
        ])
        .unwrap_err();
    assert!(matches!(err, StoreError::MeshNotFound(_)));
    assert!(s.get(&tp_key("m", "ok")).unwrap().is_none());
    assert_eq!(s.revision().unwrap(), rev);
}

#[test]
fn batch_sees_its_own_writes() {
    let s = Store::temporary().unwrap();
    let out = s
        .apply(vec![
            Op::Put(mesh("m"), Precondition::Absent),
            Op::Put(tp("m", "a", "web"), Precondition::Absent),
            Op::Put(tp("m", "a", "api"), Precondition::Version(1)),
        ])
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(s.get(&tp_key("m", "a")).unwrap().unwrap().meta.version, 2);
    assert_eq!(s.revision().unwrap(), 1, "one batch is one revision");
}

#[test]
fn list_pages_in_name_order_with_total() {
    let s = Store::temporary().unwrap();
    s.put(mesh("m"), Precondition::None).unwrap();
    for i in (0..25).rev() {
        s.put(tp("m", &format!("p{i:02}"), "web"), Precondition::None)
            .unwrap();
    }
    let page = s
        .list_page(ResourceType::TrafficPermission, Some("m"), 10, 10)
        .unwrap();
    assert_eq!(page.total, 25);
    let names: Vec<_> = page.items.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"p10"));
    assert_eq!(names.last(), Some(&"p19"));
    assert_eq!(
        s.list_page(ResourceType::TrafficPermission, None, 20, 10)
            .unwrap()
            .items
            .len(),
        5
    );
    assert_eq!(s.count(ResourceType::Mesh), 1);
}

#[test]
fn data_survives_reopen_and_a_second_opener_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put(mesh("m"), Precondition::None).unwrap();
        s.put(tp("m", "a", "web"), Precondition::None).unwrap();
        let err = Store::open(dir.path())
            .err()
            .expect("second open must fail");
        let msg = err.to_string();
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(s.get(&tp_key("m", "a")).unwrap().unwrap().meta.version, 1);
    assert_eq!(s.revision().unwrap(), 2);
}

#[test]
fn replicate_keeps_the_owners_times_and_delete_if_exists_is_quiet() {
    let s = Store::temporary().unwrap();
    s.put(mesh("m"), Precondition::None).unwrap();
    let mut r = tp("m", "a", "web");
    r.meta.creation_time = time::macros::datetime!(2020-01-02 03:04:05 UTC);
    r.meta.modification_time = time::macros::datetime!(2021-01-02 03:04:05 UTC);
    s.apply(vec![Op::Replicate(r.clone())]).unwrap();
    let got = s.get(&tp_key("m", "a")).unwrap().unwrap();
    assert_eq!(got.meta.creation_time, r.meta.creation_time);
    assert_eq!(got.meta.modification_time, r.meta.modification_time);
    assert_eq!(got.meta.version, 1);

    let out = s
        .apply(vec![
            Op::DeleteIfExists(tp_key("m", "a")),
            Op::DeleteIfExists(tp_key("m", "zz")),
        ])
        .unwrap();
    assert_eq!(out.len(), 1);
    assert!(s.get(&tp_key("m", "a")).unwrap().is_none());
}

#[test]
fn meta_entries_persist_and_list_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.put_meta("revoked/a", b"1").unwrap();
        s.put_meta("revoked/b", b"2").unwrap();
        s.put_meta("other", b"3").unwrap();
        s.delete_meta("revoked/b").unwrap();
    }
    let s = Store::open(dir.path()).unwrap();
    assert_eq!(
        s.list_meta("revoked/").unwrap(),
        vec![("revoked/a".to_string(), b"1".to_vec())]
    );
    assert_eq!(s.get_meta("other").unwrap(), Some(b"3".to_vec()));
}
