//! Generation against readable fixtures: `tests/fixtures/<case>/input.yaml`
//! holds Kuma Universal resources, `expected.yaml` the generated Envoy
//! resources of one Dataplane with every `Any` decoded.
//!
//! After an intended change, rewrite the expected files with
//! `XDS_UPDATE_FIXTURES=1 cargo test -p xds --test fixtures` and review the diff.

mod common;

use std::fs;

const UPDATE_VAR: &str = "XDS_UPDATE_FIXTURES";

/// Generates `dataplane`'s resources from `case`'s input and compares them
/// with `expected.yaml`.
fn check(case: &str, dataplane: &str) {
    let input = common::load(case);
    let resources = input.generate(dataplane);
    let yaml = serde_yaml::to_string(&common::render(&resources)).expect("YAML");
    let actual = format!(
        "# Envoy resources of Dataplane {dataplane}, from input.yaml.\n\
         # Generated: {UPDATE_VAR}=1 cargo test -p xds --test fixtures\n{yaml}"
    );
    let path = common::fixture_dir(case).join("expected.yaml");
    if std::env::var_os(UPDATE_VAR).is_some() {
        fs::write(&path, &actual).expect("write expected.yaml");
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_default();
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{path:?} differs from the generated output from line {}:\n\
             expected: {:?}\n  actual: {:?}\n\
             full output:\n{actual}\n\
             If the change is intended, run {UPDATE_VAR}=1 cargo test -p xds --test fixtures",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first),
        );
    }
}

#[test]
fn mtls_on() {
    check("mtls_on", "web-1");
}

#[test]
fn mtls_off() {
    check("mtls_off", "web-1");
}

#[test]
fn several_inbounds() {
    check("several_inbounds", "web-1");
}

#[test]
fn no_permission_denies_all() {
    check("no_permission", "web-1");
}

#[test]
fn wildcard_sources() {
    check("wildcard_sources", "web-1");
}

#[test]
fn zone_source() {
    check("zone_source", "web-1");
}

#[test]
fn shared_outbound_service() {
    check("shared_outbound_service", "web-1");
}

/// Every case directory has a test above.
#[test]
fn cross_zone_endpoints_through_ingresses() {
    check("cross_zone", "web-1");
}

#[test]
fn cross_zone_needs_mtls() {
    check("cross_zone_mtls_off", "web-1");
}

#[test]
fn every_fixture_is_checked() {
    let source = include_str!("fixtures.rs");
    let dir = common::fixture_dir("");
    for entry in fs::read_dir(&dir).expect("fixtures dir") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        assert!(
            source.contains(&format!("check(\"{name}\"")),
            "tests/fixtures/{name} has no test in tests/fixtures.rs"
        );
    }
}
