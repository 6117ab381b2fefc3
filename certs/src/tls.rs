//! rustls configurations built from PEM material, always on the ring crypto
//! provider.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pem::{parse_certs, parse_private_key};
use crate::{CertError, CertifiedKey};

/// ALPN protocol offered by both sides: gRPC runs over HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The ring provider, passed explicitly so that the configs do not depend on
/// (or panic for want of) a process-wide default provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl ToString) -> CertError {
    CertError::Tls(e.to_string())
}

fn root_store(ca_pem: &str, what: &str) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, what)? {
        roots.add(cert).map_err(|e| CertError::InvalidPem {
            what: what.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// A rustls server configuration presenting `chain_pem` (leaf first) with
/// `key_pem`, offering ALPN `h2`. With `client_ca_pem`, every client must
/// present a certificate chaining to one of the certificates in it (mTLS);
/// without, client certificates are not requested.
pub fn server_config(
    chain_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
) -> Result<ServerConfig, CertError> {
    let chain = parse_certs(chain_pem, "server certificate chain")?;
    let key = parse_private_key(key_pem, "server private key")?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?;
    let builder = match client_ca_pem {
        Some(ca_pem) => {
            let roots = root_store(ca_pem, "client CA")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(tls_err)?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A rustls client configuration that trusts only the certificates in
/// `ca_pem` (no system roots), offers ALPN `h2`, and presents `identity` as
/// its client certificate when given.
pub fn client_config(
    ca_pem: &str,
    identity: Option<&CertifiedKey>,
) -> Result<ClientConfig, CertError> {
    let roots = root_store(ca_pem, "trusted CA")?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_err)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => {
            let chain = parse_certs(&id.cert_pem, "client certificate chain")?;
            let key = parse_private_key(&id.key_pem, "client private key")?;
            builder.with_client_auth_cert(chain, key).map_err(tls_err)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use rustls::{CertificateError, Error as TlsError};

    use super::*;
    use crate::test_support::{session, Failure};
    use crate::{generate_ca, issue_server_cert};

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn sans(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn ca_and_server() -> (CertifiedKey, CertifiedKey) {
        let ca = generate_ca("kds root", DAY).expect("CA");
        let server = issue_server_cert(&ca, "kds", &sans(&["localhost", "127.0.0.1"]), DAY)
            .expect("server cert");
        (ca, server)
    }

    fn plain_server(server: &CertifiedKey) -> ServerConfig {
        server_config(&server.cert_pem, &server.key_pem, None).expect("server config")
    }

    #[test]
    fn handshake_succeeds_for_each_san_and_negotiates_h2() {
        let (ca, server) = ca_and_server();
        for name in ["localhost", "127.0.0.1"] {
            let client = client_config(&ca.cert_pem, None).expect("client config");
            let alpn = session(client, plain_server(&server), name)
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
        }
    }

    #[test]
    fn handshake_fails_when_the_client_trusts_another_ca() {
        let (_, server) = ca_and_server();
        // Another CA with another name: no issuer found. With the same name
        // (an impostor CA): found by name, but its key did not sign.
        for (cn, expected) in [
            ("other root", CertificateError::UnknownIssuer),
            ("kds root", CertificateError::BadSignature),
        ] {
            let other = generate_ca(cn, DAY).expect("CA");
            let client = client_config(&other.cert_pem, None).expect("client config");
            match session(client, plain_server(&server), "localhost") {
                Err(Failure::Client(TlsError::InvalidCertificate(e))) if e == expected => {}
                other => panic!("{cn}: expected {expected:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn handshake_fails_for_a_name_not_in_the_sans() {
        let (ca, server) = ca_and_server();
        for name in ["example.com", "127.0.0.2", "::1"] {
            let client = client_config(&ca.cert_pem, None).expect("client config");
            match session(client, plain_server(&server), name) {
                Err(Failure::Client(TlsError::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                ))) => {}
                other => panic!("{name}: expected NotValidForName, got {other:?}"),
            }
        }
    }

    #[test]
    fn trusting_several_cas_accepts_either() {
        let (ca, server) = ca_and_server();
        let other = generate_ca("new root", DAY).expect("CA");
        let bundle = format!("{}{}", other.cert_pem, ca.cert_pem);
        let client = client_config(&bundle, None).expect("client config");
        session(client, plain_server(&server), "localhost").expect("handshake");
    }

    #[test]
    fn mtls_requires_a_client_certificate_from_the_client_ca() {
        let (ca, server) = ca_and_server();
        let client_ca = generate_ca("zone clients", DAY).expect("CA");
        let mtls_server = || {
            server_config(&server.cert_pem, &server.key_pem, Some(&client_ca.cert_pem))
                .expect("server config")
        };

        let anonymous = client_config(&ca.cert_pem, None).expect("client config");
        match session(anonymous, mtls_server(), "localhost") {
            Err(Failure::Server(TlsError::NoCertificatesPresented)) => {}
            other => panic!("expected NoCertificatesPresented, got {other:?}"),
        }

        let stranger_ca = generate_ca("stranger clients", DAY).expect("CA");
        let stranger =
            issue_server_cert(&stranger_ca, "zone-a", &sans(&["zone-a"]), DAY).expect("cert");
        let client = client_config(&ca.cert_pem, Some(&stranger)).expect("client config");
        match session(client, mtls_server(), "localhost") {
            Err(Failure::Server(TlsError::InvalidCertificate(CertificateError::UnknownIssuer))) => {
            }
            other => panic!("expected UnknownIssuer, got {other:?}"),
        }

        let member =
            issue_server_cert(&client_ca, "zone-a", &sans(&["zone-a"]), DAY).expect("cert");
        let client = client_config(&ca.cert_pem, Some(&member)).expect("client config");
        session(client, mtls_server(), "localhost").expect("mTLS handshake");
    }

    #[test]
    fn server_cert_from_an_intermediate_ships_the_intermediate() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

        let root = generate_ca("root", DAY).expect("CA");
        let root_issuer = Issuer::from_ca_cert_pem(
            &root.cert_pem,
            KeyPair::from_pem(&root.key_pem).expect("root key"),
        )
        .expect("issuer");
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "zone intermediate");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let inter_key = KeyPair::generate().expect("key");
        let inter = params
            .signed_by(&inter_key, &root_issuer)
            .expect("intermediate");
        let intermediate = CertifiedKey {
            cert_pem: format!("{}{}", inter.pem(), root.cert_pem),
            key_pem: inter_key.serialize_pem(),
        };

        let leaf =
            issue_server_cert(&intermediate, "zone", &sans(&["localhost"]), DAY).expect("leaf");
        let chain = parse_certs(&leaf.cert_pem, "chain").expect("chain");
        assert_eq!(chain.len(), 2, "leaf + intermediate, root left out");

        let client = client_config(&root.cert_pem, None).expect("client config");
        session(client, plain_server(&leaf), "localhost").expect("handshake via intermediate");

        // Without the intermediate the client cannot build a path.
        let leaf_only = crate::pem::encode("CERTIFICATE", &chain[0]);
        let server = server_config(&leaf_only, &leaf.key_pem, None).expect("server config");
        let client = client_config(&root.cert_pem, None).expect("client config");
        assert!(matches!(
            session(client, server, "localhost"),
            Err(Failure::Client(TlsError::InvalidCertificate(_)))
        ));
    }

    #[test]
    fn configs_refuse_bad_input() {
        let (ca, server) = ca_and_server();
        let other = generate_ca("x", DAY).expect("CA");
        assert!(matches!(
            server_config(&server.cert_pem, &other.key_pem, None),
            Err(CertError::Tls(_))
        ));
        assert!(matches!(
            server_config("nothing", &server.key_pem, None),
            Err(CertError::InvalidPem { .. })
        ));
        assert!(matches!(
            server_config(&server.cert_pem, "nothing", None),
            Err(CertError::InvalidPem { .. })
        ));
        assert!(matches!(
            server_config(&server.cert_pem, &server.key_pem, Some("nothing")),
            Err(CertError::InvalidPem { .. })
        ));
        assert!(matches!(
            client_config("", None),
            Err(CertError::InvalidPem { .. })
        ));
        let mixed = CertifiedKey {
            cert_pem: server.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
        };
        assert!(matches!(
            client_config(&ca.cert_pem, Some(&mixed)),
            Err(CertError::Tls(_))
        ));
    }

    #[tokio::test]
    async fn loopback_tcp_handshake_with_tokio_rustls() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let (ca, server) = ca_and_server();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(plain_server(&server)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("server handshake");
            let mut got = [0u8; 4];
            tls.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"ping");
            tls.write_all(b"pong").await.expect("write");
            tls.shutdown().await.expect("shutdown");
        });

        let connector = tokio_rustls::TlsConnector::from(Arc::new(
            client_config(&ca.cert_pem, None).expect("cfg"),
        ));
        let client = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::IpAddress(addr.ip().into());
            let mut tls = connector
                .connect(name, tcp)
                .await
                .expect("client handshake");
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            tls.write_all(b"ping").await.expect("write");
            let mut got = [0u8; 4];
            tls.read_exact(&mut got).await.expect("read");
            assert_eq!(&got, b"pong");
        };
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("client in time");
        tokio::time::timeout(Duration::from_secs(10), server_task)
            .await
            .expect("server in time")
            .expect("server task");
    }
}
