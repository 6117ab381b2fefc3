//! Kuma's validation rules. Every rule reports the field path it applies to,
//! and all problems are collected rather than stopping at the first.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::duration::parse_duration;
use crate::error::ValidationError;
use crate::resource::Resource;
use crate::spec::*;
use crate::{PROTOCOL_TAG, SERVICE_TAG};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;
const PROTOCOLS: [&str; 5] = ["http", "http2", "grpc", "tcp", "kafka"];

impl Resource {
    /// Applies the rules for this resource's type; `Ok` means it may be stored.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut e = ValidationError::default();
        let ty = self.ty();
        if ty == crate::ResourceType::Zone {
            check_dns_label(&mut e, "name", &self.name);
        } else {
            check_name(&mut e, "name", &self.name);
        }
        if ty.is_mesh_scoped() {
            match &self.mesh {
                None => e.add("mesh", "must be set"),
                Some(m) => check_name(&mut e, "mesh", m),
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() {
                e.add("labels", "label keys must not be empty");
            }
        }
        match &self.spec {
            Spec::Mesh(s) => validate_mesh(&mut e, s),
            Spec::TrafficPermission(s) => validate_traffic_permission(&mut e, s),
            Spec::Dataplane(s) => validate_dataplane(&mut e, s),
            Spec::ZoneIngress(s) => validate_zone_ingress(&mut e, s),
            Spec::Zone(_) | Spec::DataplaneInsight(_) => {}
            Spec::MeshCaRequest(s) => crate::system::validate_mesh_ca_request(&mut e, s),
            Spec::ZoneIntermediate(s) => crate::system::validate_zone_intermediate(&mut e, s),
            Spec::DataplaneTokenKey(s) => crate::system::validate_dataplane_token_key(&mut e, s),
        }
        e.into_result()
    }
}

/// A lowercase RFC 1123 subdomain of at most 253 characters.
pub(crate) fn check_name(e: &mut ValidationError, field: &str, name: &str) {
    if name.is_empty() {
        e.add(field, "must not be empty");
        return;
    }
    if name.len() > MAX_NAME_LEN {
        e.add(field, format!("must be at most {MAX_NAME_LEN} characters"));
        return;
    }
    if !name.split('.').all(is_dns_label) {
        e.add(
            field,
            "must be a lowercase RFC 1123 subdomain: a-z, 0-9, '-' and '.', starting and ending with a letter or digit",
        );
    }
}

/// A DNS label: at most 63 of a-z, 0-9 and '-', not starting or ending with '-'.
pub(crate) fn check_dns_label(e: &mut ValidationError, field: &str, name: &str) {
    if name.is_empty() {
        e.add(field, "must not be empty");
    } else if !is_dns_label(name) {
        e.add(
            field,
            "must be a DNS label: at most 63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit",
        );
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL_LEN
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_tag_value(v: &str) -> bool {
    v == "*"
        || (!v.is_empty()
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'/' | b'_' | b'-')))
}

fn check_port(e: &mut ValidationError, field: &str, port: u32) {
    if !(1..=65535).contains(&port) {
        e.add(field, "must be in the range [1, 65535]");
    }
}

fn check_duration(e: &mut ValidationError, field: &str, value: &str) {
    if let Err(reason) = parse_duration(value) {
        e.add(field, reason);
    }
}

/// An IP address or a hostname made of DNS labels (any case).
fn check_address(e: &mut ValidationError, field: &str, addr: &str) {
    if addr.is_empty() {
        e.add(field, "must not be empty");
        return;
    }
    if addr.parse::<IpAddr>().is_ok() {
        return;
    }
    let lower = addr.to_ascii_lowercase();
    if lower.len() > MAX_NAME_LEN || !lower.split('.').all(is_dns_label) {
        e.add(field, "must be an IP address or a hostname");
    }
}

/// Tags on a dataplane or in a selector: keys non-empty, values `*` or
/// `[A-Za-z0-9./_-]`. `wildcard` says whether `*` is allowed.
fn check_tags(e: &mut ValidationError, field: &str, tags: &Tags, wildcard: bool) {
    for (k, v) in tags {
        if k.is_empty() {
            e.add(field, "tag keys must not be empty");
            continue;
        }
        let path = format!("{field}[\"{k}\"]");
        if v == "*" && !wildcard {
            e.add(path, "must not be '*' here");
        } else if !is_tag_value(v) {
            e.add(
                path,
                "tag value must be '*' or made of A-Z, a-z, 0-9, '.', '/', '_' and '-'",
            );
        }
    }
}

fn check_service_tags(e: &mut ValidationError, field: &str, tags: &Tags, wildcard: bool) {
    if !tags.contains_key(SERVICE_TAG) {
        e.add(field, format!("must contain the {SERVICE_TAG} tag"));
    }
    check_tags(e, field, tags, wildcard);
}

fn validate_selectors(e: &mut ValidationError, field: &str, selectors: &[Selector]) {
    if selectors.is_empty() {
        e.add(field, "must have at least one element");
    }
    for (i, s) in selectors.iter().enumerate() {
        let path = format!("{field}[{i}].match");
        if s.match_tags.is_empty() {
            e.add(path, "must have at least one tag");
        } else {
            check_service_tags(e, &path, &s.match_tags, true);
        }
    }
}

fn validate_traffic_permission(e: &mut ValidationError, s: &TrafficPermissionSpec) {
    validate_selectors(e, "sources", &s.sources);
    validate_selectors(e, "destinations", &s.destinations);
}

fn validate_mesh(e: &mut ValidationError, s: &MeshSpec) {
    let Some(mtls) = &s.mtls else { return };
    let mut names = BTreeSet::new();
    for (i, b) in mtls.backends.iter().enumerate() {
        let path = format!("mtls.backends[{i}]");
        if b.name.is_empty() {
            e.add(format!("{path}.name"), "must not be empty");
        } else if !names.insert(b.name.as_str()) {
            e.add(
                format!("{path}.name"),
                format!("{:?} is used by another backend", b.name),
            );
        }
        if b.kind != "builtin" {
            e.add(
                format!("{path}.type"),
                format!(
                    "{:?} is not supported; the only backend type is \"builtin\"",
                    b.kind
                ),
            );
        }
        if let Some(mode) = &b.mode {
            if mode != "STRICT" && mode != "PERMISSIVE" {
                e.add(format!("{path}.mode"), "must be STRICT or PERMISSIVE");
            }
        }
        if let Some(exp) = b
            .dp_cert
            .as_ref()
            .and_then(|d| d.rotation.as_ref())
            .and_then(|r| r.expiration.as_ref())
        {
            check_duration(e, &format!("{path}.dpCert.rotation.expiration"), exp);
        }
        if let Some(t) = b.dp_cert.as_ref().and_then(|d| d.request_timeout.as_ref()) {
            check_duration(e, &format!("{path}.dpCert.requestTimeout"), t);
        }
        if let Some(exp) = b
            .conf
            .as_ref()
            .and_then(|c| c.ca_cert.as_ref())
            .and_then(|c| c.expiration.as_ref())
        {
            check_duration(e, &format!("{path}.conf.caCert.expiration"), exp);
        }
    }
    if let Some(enabled) = &mtls.enabled_backend {
        if !enabled.is_empty() && !names.contains(enabled.as_str()) {
            e.add(
                "mtls.enabledBackend",
                format!("has to be set to one of the backends in the mesh, {enabled:?} is not one"),
            );
        }
    }
}

fn validate_dataplane(e: &mut ValidationError, s: &DataplaneSpec) {
    let n = &s.networking;
    check_address(e, "networking.address", &n.address);
    if let Some(a) = &n.advertised_address {
        check_address(e, "networking.advertisedAddress", a);
    }
    if n.inbound.is_empty() && n.gateway.is_none() {
        e.add(
            "networking",
            "has to contain at least one inbound interface or gateway",
        );
    }
    for (i, inb) in n.inbound.iter().enumerate() {
        let path = format!("networking.inbound[{i}]");
        check_port(e, &format!("{path}.port"), inb.port);
        if let Some(p) = inb.service_port {
            check_port(e, &format!("{path}.servicePort"), p);
        }
        if let Some(a) = &inb.service_address {
            check_address(e, &format!("{path}.serviceAddress"), a);
        }
        if let Some(a) = &inb.address {
            check_address(e, &format!("{path}.address"), a);
        }
        let tags = format!("{path}.tags");
        check_service_tags(e, &tags, &inb.tags, false);
        if let Some(p) = inb.tags.get(PROTOCOL_TAG) {
            if !PROTOCOLS.contains(&p.as_str()) {
                e.add(
                    format!("{tags}[\"{PROTOCOL_TAG}\"]"),
                    format!("must be one of {}", PROTOCOLS.join(", ")),
                );
            }
        }
    }
    for (i, out) in n.outbound.iter().enumerate() {
        let path = format!("networking.outbound[{i}]");
        check_port(e, &format!("{path}.port"), out.port);
        if let Some(a) = &out.address {
            check_address(e, &format!("{path}.address"), a);
        }
        check_service_tags(e, &format!("{path}.tags"), &out.tags, false);
    }
    if let Some(admin) = &n.admin {
        check_port(e, "networking.admin.port", admin.port);
    }
}

fn validate_zone_ingress(e: &mut ValidationError, s: &ZoneIngressSpec) {
    let n = &s.networking;
    if let Some(z) = &s.zone {
        check_dns_label(e, "zone", z);
    }
    check_address(e, "networking.address", &n.address);
    check_port(e, "networking.port", n.port);
    match (&n.advertised_address, n.advertised_port) {
        (Some(a), Some(p)) => {
            check_address(e, "networking.advertisedAddress", a);
            check_port(e, "networking.advertisedPort", p);
        }
        (None, None) => {}
        (Some(_), None) => e.add(
            "networking.advertisedPort",
            "must be set when advertisedAddress is set",
        ),
        (None, Some(_)) => e.add(
            "networking.advertisedAddress",
            "must be set when advertisedPort is set",
        ),
    }
    if let Some(admin) = &n.admin {
        check_port(e, "networking.admin.port", admin.port);
    }
    for (i, svc) in s.available_services.iter().enumerate() {
        let path = format!("availableServices[{i}]");
        check_service_tags(e, &format!("{path}.tags"), &svc.tags, false);
        if svc.mesh.is_empty() {
            e.add(format!("{path}.mesh"), "must not be empty");
        }
    }
}

/// Checks a zone name (a DNS label), reporting it under `field`.
pub fn validate_zone_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let mut e = ValidationError::default();
    check_dns_label(&mut e, field, name);
    e.into_result()
}
