//! In-memory TLS sessions for the unit tests (no sockets).

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Error as TlsError, ServerConfig, ServerConnection};

/// Which side of a session failed, and why.
#[derive(Debug)]
pub(crate) enum Failure {
    Client(TlsError),
    Server(TlsError),
}

/// Moves all pending TLS records client → server, then server → client.
fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Failure> {
    let mut buf = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut buf).expect("write to Vec");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        server.read_tls(&mut rd).expect("read from slice");
        server.process_new_packets().map_err(Failure::Server)?;
    }
    buf.clear();
    while server.wants_write() {
        server.write_tls(&mut buf).expect("write to Vec");
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        client.read_tls(&mut rd).expect("read from slice");
        client.process_new_packets().map_err(Failure::Client)?;
    }
    Ok(())
}

/// Runs a TLS session in memory: the handshake, then "ping" one way and
/// "pong" the other. Returns the ALPN protocol the client saw.
pub(crate) fn session(
    client_cfg: ClientConfig,
    server_cfg: ServerConfig,
    server_name: &str,
) -> Result<Option<Vec<u8>>, Failure> {
    let name = ServerName::try_from(server_name.to_owned()).expect("server name");
    let mut client = ClientConnection::new(Arc::new(client_cfg), name).expect("client");
    let mut server = ServerConnection::new(Arc::new(server_cfg)).expect("server");
    for _ in 0..10 {
        pump(&mut client, &mut server)?;
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    assert!(!client.is_handshaking() && !server.is_handshaking());

    client.writer().write_all(b"ping").expect("buffer");
    pump(&mut client, &mut server)?;
    let mut got = [0u8; 4];
    server.reader().read_exact(&mut got).expect("ping arrives");
    assert_eq!(&got, b"ping");
    server.writer().write_all(b"pong").expect("buffer");
    pump(&mut client, &mut server)?;
    client.reader().read_exact(&mut got).expect("pong arrives");
    assert_eq!(&got, b"pong");
    Ok(client.alpn_protocol().map(<[u8]>::to_vec))
}
