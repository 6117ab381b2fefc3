//! Mesh identity: secret names, SNI, SPIFFE IDs, the TLS transport sockets
//! and the SDS secrets themselves.

use xds_api::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, data_source::Specifier, transport_socket,
    AggregatedConfigSource, ApiVersion, ConfigSource, DataSource, TransportSocket,
};
use xds_api::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, subject_alt_name_matcher::SanType, CertificateValidationContext, SdsSecretConfig,
    Secret, SubjectAltNameMatcher, TlsCertificate,
};
use xds_api::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use xds_api::pb::google::protobuf::BoolValue;

use crate::extensions::common_tls_context::{
    CombinedCertificateValidationContext, ValidationContextType,
};
use crate::extensions::{to_any, CommonTlsContext, DownstreamTlsContext, UpstreamTlsContext};

/// Envoy's name for the TLS transport socket.
pub const TLS_TRANSPORT_SOCKET: &str = "envoy.transport_sockets.tls";

/// SDS name of a mesh's workload identity (certificate chain and key).
pub fn identity_secret_name(mesh: &str) -> String {
    format!("identity_cert:secret:{mesh}")
}

/// SDS name of a mesh's CA bundle.
pub fn ca_secret_name(mesh: &str) -> String {
    format!("mesh_ca:secret:{mesh}")
}

/// The SNI a client sends to reach `service` in `mesh`, in Kuma's format
/// `<service>{mesh=<mesh>}`.
pub fn sni(service: &str, mesh: &str) -> String {
    format!("{service}{{mesh={mesh}}}")
}

/// The URI SAN naming a service: `spiffe://<mesh>/<service>`.
pub fn spiffe_id(mesh: &str, service: &str) -> String {
    format!("spiffe://{mesh}/{service}")
}

/// The URI SAN a workload certificate carries for any other tag:
/// `kuma://<tag>/<value>`.
pub fn kuma_tag_uri(tag: &str, value: &str) -> String {
    format!("kuma://{tag}/{value}")
}

/// SDS secrets for a mesh, sorted by name: the identity (chain and key PEM)
/// and the mesh CA bundle (PEM), both inline.
pub fn secrets(mesh: &str, cert_chain_pem: &str, key_pem: &str, ca_pem: &str) -> Vec<Secret> {
    let identity = Secret {
        name: identity_secret_name(mesh),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(inline(cert_chain_pem)),
            private_key: Some(inline(key_pem)),
            ..Default::default()
        })),
    };
    let ca = Secret {
        name: ca_secret_name(mesh),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(inline(ca_pem)),
                ..Default::default()
            },
        )),
    };
    vec![identity, ca]
}

fn inline(text: &str) -> DataSource {
    DataSource {
        specifier: Some(Specifier::InlineString(text.to_owned())),
        ..Default::default()
    }
}

/// `ads: {}` with the v3 resource API: "fetch this over the ADS stream".
pub(crate) fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn sds(name: String) -> SdsSecretConfig {
    SdsSecretConfig {
        name,
        sds_config: Some(ads()),
    }
}

/// Server side of an inbound: present the mesh identity, require a client
/// certificate signed by the mesh CA.
pub(crate) fn downstream_transport_socket(mesh: &str) -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(identity_secret_name(mesh))],
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds(ca_secret_name(mesh)),
            )),
        }),
        require_client_certificate: Some(BoolValue { value: true }),
    };
    transport_socket(to_any(&context))
}

/// Client side of an outbound: present the mesh identity, send Kuma's SNI and
/// accept only a server whose certificate is signed by the mesh CA and
/// carries the URI SAN `spiffe://<mesh>/<service>`.
pub(crate) fn upstream_transport_socket(mesh: &str, service: &str) -> TransportSocket {
    let san = SubjectAltNameMatcher {
        san_type: SanType::Uri as i32,
        matcher: Some(StringMatcher {
            match_pattern: Some(MatchPattern::Exact(spiffe_id(mesh, service))),
            ..Default::default()
        }),
    };
    let combined = CombinedCertificateValidationContext {
        default_validation_context: Some(CertificateValidationContext {
            match_typed_subject_alt_names: vec![san],
            ..Default::default()
        }),
        validation_context_sds_secret_config: Some(sds(ca_secret_name(mesh))),
    };
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds(identity_secret_name(mesh))],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                Box::new(combined),
            )),
        }),
        sni: sni(service, mesh),
    };
    transport_socket(to_any(&context))
}

fn transport_socket(typed_config: xds_api::pb::google::protobuf::Any) -> TransportSocket {
    TransportSocket {
        name: TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(typed_config)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kuma() {
        assert_eq!(
            identity_secret_name("default"),
            "identity_cert:secret:default"
        );
        assert_eq!(ca_secret_name("default"), "mesh_ca:secret:default");
        assert_eq!(sni("backend", "default"), "backend{mesh=default}");
        assert_eq!(spiffe_id("default", "backend"), "spiffe://default/backend");
        assert_eq!(
            kuma_tag_uri("kuma.io/zone", "dmz"),
            "kuma://kuma.io/zone/dmz"
        );
    }

    #[test]
    fn secrets_carry_the_pem_inline_sorted_by_name() {
        let s = secrets("m", "CHAIN", "KEY", "CA");
        let names: Vec<_> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["identity_cert:secret:m", "mesh_ca:secret:m"]);
        let Some(secret::Type::TlsCertificate(cert)) = &s[0].r#type else {
            panic!("identity is not a TlsCertificate: {:?}", s[0]);
        };
        assert_eq!(cert.certificate_chain, Some(inline("CHAIN")));
        assert_eq!(cert.private_key, Some(inline("KEY")));
        let Some(secret::Type::ValidationContext(ca)) = &s[1].r#type else {
            panic!("CA is not a ValidationContext: {:?}", s[1]);
        };
        assert_eq!(ca.trusted_ca, Some(inline("CA")));
    }
}
