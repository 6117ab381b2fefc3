//! Envoy messages that `xds-api` 0.2 does not ship, defined with `prost`
//! derives. Only the fields this crate sets are declared; Envoy's decoder
//! fills every other field with its default.
//!
//! Field numbers are copied from Envoy's `.proto` files (paths on each
//! message). A wrong number is not caught by the compiler, so every message
//! has a test against hand-written bytes below, and `tests/envoy_validate.rs`
//! feeds the binary encoding to a real Envoy.

use prost::{Message, Name};
use xds_api::pb::envoy::config::rbac::v3::Rbac;
use xds_api::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, SdsSecretConfig,
};
use xds_api::pb::google::protobuf::{Any, BoolValue};

/// Type URLs of the messages in this module, as Envoy expects them in `Any`.
pub mod type_urls {
    pub const TCP_PROXY: &str =
        "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
    pub const NETWORK_RBAC: &str =
        "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC";
    pub const TLS_INSPECTOR: &str =
        "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
    pub const DOWNSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
    pub const UPSTREAM_TLS_CONTEXT: &str =
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
}

/// Encodes a message into an `Any` carrying its type URL.
pub fn to_any<M: Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

/// Implements `prost::Name` with Envoy's `type.googleapis.com/` type URL
/// (prost's default URL has no domain).
macro_rules! envoy_name {
    ($ty:ty, $package:literal, $name:literal, $url:path) => {
        impl Name for $ty {
            const NAME: &'static str = $name;
            const PACKAGE: &'static str = $package;
            fn full_name() -> String {
                concat!($package, ".", $name).to_owned()
            }
            fn type_url() -> String {
                $url.to_owned()
            }
        }
    };
}

/// `envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`
/// (`api/envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto`).
#[derive(Clone, PartialEq, Message)]
pub struct TcpProxy {
    /// Required by Envoy's validation (`min_len: 1`).
    #[prost(string, tag = "1")]
    pub stat_prefix: String,
    /// `oneof cluster_specifier`, required.
    #[prost(oneof = "tcp_proxy::ClusterSpecifier", tags = "2")]
    pub cluster_specifier: Option<tcp_proxy::ClusterSpecifier>,
}

pub mod tcp_proxy {
    /// `oneof cluster_specifier` of [`super::TcpProxy`]; `weighted_clusters = 10`
    /// is not declared.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ClusterSpecifier {
        #[prost(string, tag = "2")]
        Cluster(String),
    }
}

envoy_name!(
    TcpProxy,
    "envoy.extensions.filters.network.tcp_proxy.v3",
    "TcpProxy",
    type_urls::TCP_PROXY
);

/// `envoy.extensions.filters.network.rbac.v3.RBAC`, the network filter
/// (`api/envoy/extensions/filters/network/rbac/v3/rbac.proto`).
///
/// Note `stat_prefix` is field 3: field 2 is `shadow_rules`.
#[derive(Clone, PartialEq, Message)]
pub struct NetworkRbac {
    /// Absent: no enforcement. Present and empty: deny everything.
    #[prost(message, optional, tag = "1")]
    pub rules: Option<Rbac>,
    /// Required by Envoy's validation (`min_len: 1`).
    #[prost(string, tag = "3")]
    pub stat_prefix: String,
}

envoy_name!(
    NetworkRbac,
    "envoy.extensions.filters.network.rbac.v3",
    "RBAC",
    type_urls::NETWORK_RBAC
);

/// `envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`
/// (`api/envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto`).
/// Its two optional fields are not declared; the empty message is the default.
#[derive(Clone, PartialEq, Message)]
pub struct TlsInspector {}

envoy_name!(
    TlsInspector,
    "envoy.extensions.filters.listener.tls_inspector.v3",
    "TlsInspector",
    type_urls::TLS_INSPECTOR
);

/// `envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`
/// (`api/envoy/extensions/transport_sockets/tls/v3/tls.proto`): xds-api 0.2
/// has `common.proto` and `secret.proto` of this package but not `tls.proto`.
#[derive(Clone, PartialEq, Message)]
pub struct DownstreamTlsContext {
    #[prost(message, optional, tag = "1")]
    pub common_tls_context: Option<CommonTlsContext>,
    #[prost(message, optional, tag = "2")]
    pub require_client_certificate: Option<BoolValue>,
}

envoy_name!(
    DownstreamTlsContext,
    "envoy.extensions.transport_sockets.tls.v3",
    "DownstreamTlsContext",
    type_urls::DOWNSTREAM_TLS_CONTEXT
);

/// `envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext` (`tls.proto`).
#[derive(Clone, PartialEq, Message)]
pub struct UpstreamTlsContext {
    #[prost(message, optional, tag = "1")]
    pub common_tls_context: Option<CommonTlsContext>,
    #[prost(string, tag = "2")]
    pub sni: String,
}

envoy_name!(
    UpstreamTlsContext,
    "envoy.extensions.transport_sockets.tls.v3",
    "UpstreamTlsContext",
    type_urls::UPSTREAM_TLS_CONTEXT
);

/// `envoy.extensions.transport_sockets.tls.v3.CommonTlsContext` (`tls.proto`).
#[derive(Clone, PartialEq, Message)]
pub struct CommonTlsContext {
    #[prost(message, repeated, tag = "6")]
    pub tls_certificate_sds_secret_configs: Vec<SdsSecretConfig>,
    #[prost(oneof = "common_tls_context::ValidationContextType", tags = "3, 7, 8")]
    pub validation_context_type: Option<common_tls_context::ValidationContextType>,
}

pub mod common_tls_context {
    use super::{CertificateValidationContext, Message, SdsSecretConfig};

    /// `oneof validation_context_type` of [`super::CommonTlsContext`].
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum ValidationContextType {
        #[prost(message, tag = "3")]
        ValidationContext(CertificateValidationContext),
        #[prost(message, tag = "7")]
        ValidationContextSdsSecretConfig(SdsSecretConfig),
        /// Boxed: it is the largest variant by far.
        #[prost(message, tag = "8")]
        CombinedValidationContext(Box<CombinedCertificateValidationContext>),
    }

    /// `CommonTlsContext.CombinedCertificateValidationContext`: the static
    /// part (SAN matchers) merged with the CA fetched over SDS.
    #[derive(Clone, PartialEq, Message)]
    pub struct CombinedCertificateValidationContext {
        /// Required by Envoy's validation.
        #[prost(message, optional, tag = "1")]
        pub default_validation_context: Option<CertificateValidationContext>,
        /// Required by Envoy's validation.
        #[prost(message, optional, tag = "2")]
        pub validation_context_sds_secret_config: Option<SdsSecretConfig>,
    }
}

#[cfg(test)]
mod tests {
    use super::common_tls_context::{CombinedCertificateValidationContext, ValidationContextType};
    use super::*;

    fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) -> Vec<u8> {
        let bytes = m.encode_to_vec();
        let back = M::decode(bytes.as_slice()).expect("decode");
        assert_eq!(&back, m);
        bytes
    }

    fn sds(name: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: name.into(),
            sds_config: None,
        }
    }

    #[test]
    fn tcp_proxy_round_trips_and_uses_fields_1_and_2() {
        let m = TcpProxy {
            stat_prefix: "a".into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("b".into())),
        };
        // field 1 (LEN) = "a", field 2 (LEN) = "b"
        assert_eq!(round_trip(&m), [0x0a, 1, b'a', 0x12, 1, b'b']);
        assert_eq!(to_any(&m).type_url, type_urls::TCP_PROXY);
    }

    #[test]
    fn network_rbac_round_trips_and_stat_prefix_is_field_3() {
        let m = NetworkRbac {
            rules: Some(Rbac::default()),
            stat_prefix: "s".into(),
        };
        // field 1 (LEN) = empty RBAC (present: deny all), field 3 (LEN) = "s"
        assert_eq!(round_trip(&m), [0x0a, 0, 0x1a, 1, b's']);
        assert_eq!(to_any(&m).type_url, type_urls::NETWORK_RBAC);
    }

    #[test]
    fn tls_inspector_is_empty() {
        assert!(round_trip(&TlsInspector {}).is_empty());
        // Envoy's optional fields (1, 2) are skipped, not an error.
        let with_field_2 = [0x12, 2, 0x08, 0x10];
        assert_eq!(
            TlsInspector::decode(with_field_2.as_slice()).expect("decode"),
            TlsInspector {}
        );
        assert_eq!(to_any(&TlsInspector {}).type_url, type_urls::TLS_INSPECTOR);
    }

    #[test]
    fn downstream_tls_context_round_trips_and_require_client_cert_is_field_2() {
        let m = DownstreamTlsContext {
            common_tls_context: None,
            require_client_certificate: Some(BoolValue { value: true }),
        };
        // field 2 (LEN) = BoolValue { field 1 (VARINT) = 1 }
        assert_eq!(round_trip(&m), [0x12, 2, 0x08, 1]);
        let full = DownstreamTlsContext {
            common_tls_context: Some(CommonTlsContext::default()),
            ..m
        };
        round_trip(&full);
        assert_eq!(to_any(&full).type_url, type_urls::DOWNSTREAM_TLS_CONTEXT);
    }

    #[test]
    fn upstream_tls_context_round_trips_and_sni_is_field_2() {
        let m = UpstreamTlsContext {
            common_tls_context: None,
            sni: "x".into(),
        };
        assert_eq!(round_trip(&m), [0x12, 1, b'x']);
        assert_eq!(to_any(&m).type_url, type_urls::UPSTREAM_TLS_CONTEXT);
    }

    #[test]
    fn common_tls_context_field_numbers() {
        let certs = CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("i")],
            ..Default::default()
        };
        // field 6 (LEN) = SdsSecretConfig { field 1 = "i" }
        assert_eq!(round_trip(&certs), [0x32, 3, 0x0a, 1, b'i']);

        let sds_ca = CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                sds("c"),
            )),
            ..Default::default()
        };
        assert_eq!(round_trip(&sds_ca), [0x3a, 3, 0x0a, 1, b'c']);

        let static_ca = CommonTlsContext {
            validation_context_type: Some(ValidationContextType::ValidationContext(
                CertificateValidationContext::default(),
            )),
            ..Default::default()
        };
        assert_eq!(round_trip(&static_ca), [0x1a, 0]);
    }

    #[test]
    fn combined_validation_context_field_numbers() {
        let combined = CombinedCertificateValidationContext {
            default_validation_context: Some(CertificateValidationContext::default()),
            validation_context_sds_secret_config: Some(sds("c")),
        };
        assert_eq!(round_trip(&combined), [0x0a, 0, 0x12, 3, 0x0a, 1, b'c']);
        let common = CommonTlsContext {
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                Box::new(combined),
            )),
            ..Default::default()
        };
        // field 8 (LEN)
        assert_eq!(round_trip(&common)[..2], [0x42, 7]);
    }
}
