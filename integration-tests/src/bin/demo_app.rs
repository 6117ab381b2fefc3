//! `demo-app`: the demo's workload and its client, small enough to read.
//!
//!   demo-app serve --listen 127.0.0.1:8080 --name ledger   answers every
//!       HTTP request with `hello from <name>`
//!   demo-app connect 10.0.0.2:8443                      a TCP connect only,
//!       exits 1 when it cannot (refused, filtered, timed out)
//!   demo-app get 127.0.0.1:10001 [--path /]               prints the body,
//!       exits 1 when the call fails (refused, reset, denied, not 200)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "demo-app", about = "The demo's HTTP workload and client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Answer every HTTP request with `hello from <name>` until SIGTERM.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        name: String,
    },
    /// Only open a TCP connection (no data); exits 1 when it cannot.
    Connect {
        addr: SocketAddr,
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
    /// One HTTP GET; prints the body, exits 1 on failure.
    Get {
        addr: SocketAddr,
        /// The request path.
        #[arg(long, default_value = "/")]
        path: String,
        /// Seconds to wait for the connection and the answer.
        #[arg(long, default_value_t = 2)]
        timeout: u64,
    },
}

fn serve(listen: SocketAddr, name: &str) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!("demo-app {name} listening on {listen}");
    let body = format!("hello from {name}");
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 2048];
        let _ = s.read(&mut buf);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(resp.as_bytes());
    }
    Ok(())
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_owned()),
        _ if text.is_empty() => Err("the connection closed without an answer".into()),
        _ => Err(format!("unexpected answer: {text:?}")),
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve { listen, name } => match serve(listen, &name) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("demo-app: cannot serve on {listen}: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Connect { addr, timeout } => {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(timeout)) {
                Ok(_) => {
                    println!("connected to {addr}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("demo-app: cannot connect to {addr}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Get {
            addr,
            path,
            timeout,
        } => match get(addr, &path, Duration::from_secs(timeout)) {
            Ok(body) => {
                println!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("demo-app: GET {addr} failed: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
