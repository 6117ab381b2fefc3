//! Harness for end-to-end tests and benchmarks: it runs the real binaries as
//! child processes on free loopback ports, with temporary data directories,
//! and talks to them the way an operator would (REST and `meshctl`).
//!
//! Start at [`GlobalCp::start`]. Every process is killed when its handle is
//! dropped, so a failing test leaves nothing behind. Waits poll for an event
//! with a deadline ([`wait_until`]); there are no fixed sleeps. Binaries are
//! looked up next to the running test executable (`target/<profile>/`), so
//! build them first: `cargo build --workspace` (scripts/test does).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub mod envoy;
pub mod inproc;
pub mod tls_probe;
pub mod xds_load;

use anyhow::{bail, Context};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// How long a control plane may take to become ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The directory holding the workspace's binaries for this build profile.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MESH_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current executable");
    let dir = exe.parent().expect("executable directory");
    // Test executables live in target/<profile>/deps, binaries one level up.
    if dir.ends_with("deps") {
        dir.parent().expect("profile directory").to_owned()
    } else {
        dir.to_owned()
    }
}

/// Path of a workspace binary; fails loudly when it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace, or scripts/test)",
        path.display()
    );
    path
}

/// A loopback address with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address")
}

/// Polls `check` every 10 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running control plane process (`global-cp` or `zone-cp`).
pub struct ControlPlane {
    child: Option<Child>,
    binary: &'static str,
    args: Vec<String>,
    pub data_dir: PathBuf,
    pub api_addr: SocketAddr,
    pub diagnostics_addr: SocketAddr,
    /// The global's KDS address.
    pub kds_addr: Option<SocketAddr>,
    /// A zone's dataplane server (bootstrap and ADS).
    pub dp_addr: Option<SocketAddr>,
    pub log_path: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// The global control plane under test.
pub type GlobalCp = ControlPlane;

impl ControlPlane {
    /// Starts a global CP on free ports with a fresh data directory and waits
    /// until it is ready.
    pub fn start() -> anyhow::Result<ControlPlane> {
        let tmp = tempfile::tempdir()?;
        let data = tmp.path().join("data");
        let mut cp = Self::start_in(&data)?;
        cp._tmp = Some(tmp);
        Ok(cp)
    }

    /// Starts a global CP on `data_dir` (kept after drop) and waits for ready.
    pub fn start_in(data_dir: &Path) -> anyhow::Result<ControlPlane> {
        let cp = Self::spawn(data_dir, free_addr(), free_addr())?;
        cp.wait_ready()?;
        Ok(cp)
    }

    /// Starts a global CP with `extra` flags on free ports and a fresh data
    /// directory, and waits until it is ready.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<ControlPlane> {
        let tmp = tempfile::tempdir()?;
        let kds = free_addr();
        let mut args = vec!["--kds-addr".to_owned(), kds.to_string()];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let mut cp = Self::launch(
            "global-cp",
            args,
            &tmp.path().join("data"),
            free_addr(),
            free_addr(),
        )?;
        cp.kds_addr = Some(kds);
        cp._tmp = Some(tmp);
        cp.wait_ready()?;
        Ok(cp)
    }

    /// Starts a global CP without waiting.
    pub fn spawn(
        data_dir: &Path,
        api_addr: SocketAddr,
        diagnostics_addr: SocketAddr,
    ) -> anyhow::Result<ControlPlane> {
        let kds = free_addr();
        let args = vec!["--kds-addr".to_owned(), kds.to_string()];
        let mut cp = Self::launch("global-cp", args, data_dir, api_addr, diagnostics_addr)?;
        cp.kds_addr = Some(kds);
        Ok(cp)
    }

    /// Starts a zone CP named `zone` synced with `global` (a fresh token is
    /// issued for it) and waits until it is ready.
    pub fn zone(zone: &str, global: &ControlPlane) -> anyhow::Result<ControlPlane> {
        let token = global.zone_token(zone, None)?;
        Self::zone_with_token(zone, global, &token)
    }

    /// Starts a zone CP with the given token text.
    pub fn zone_with_token(
        zone: &str,
        global: &ControlPlane,
        token: &str,
    ) -> anyhow::Result<ControlPlane> {
        let tmp = tempfile::tempdir()?;
        let token_file = tmp.path().join("zone-token");
        std::fs::write(&token_file, token)?;
        let kds = global.kds_addr.context("the global has a KDS address")?;
        let mut cp = Self::spawn_zone(zone, &tmp.path().join("data"), Some((kds, &token_file)))?;
        cp._tmp = Some(tmp);
        cp.wait_ready()?;
        Ok(cp)
    }

    /// Starts a zone CP without waiting; standalone when `global` is `None`.
    pub fn spawn_zone(
        zone: &str,
        data_dir: &Path,
        global: Option<(SocketAddr, &Path)>,
    ) -> anyhow::Result<ControlPlane> {
        let dp = free_addr();
        let mut args = vec![
            "--zone".to_owned(),
            zone.to_owned(),
            "--dp-server-addr".to_owned(),
            dp.to_string(),
        ];
        if let Some((kds, token_file)) = global {
            args.extend([
                "--global-address".to_owned(),
                format!("grpcs://127.0.0.1:{}", kds.port()),
                "--zone-token-file".to_owned(),
                token_file.display().to_string(),
            ]);
        }
        let mut cp = Self::launch("zone-cp", args, data_dir, free_addr(), free_addr())?;
        cp.dp_addr = Some(dp);
        Ok(cp)
    }

    /// Starts a standalone zone CP (no global) and waits until it is ready.
    pub fn standalone_zone(zone: &str) -> anyhow::Result<ControlPlane> {
        let tmp = tempfile::tempdir()?;
        let mut cp = Self::spawn_zone(zone, &tmp.path().join("data"), None)?;
        cp._tmp = Some(tmp);
        cp.wait_ready()?;
        Ok(cp)
    }

    /// Issues a dataplane token through this control plane's REST API.
    pub fn dataplane_token(&self, mesh: &str, service: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({ "mesh": mesh, "tags": { "kuma.io/service": [service] } });
        self.issue_token("/tokens/dataplane", &body)
    }

    fn launch(
        binary: &'static str,
        mut args: Vec<String>,
        data_dir: &Path,
        api_addr: SocketAddr,
        diagnostics_addr: SocketAddr,
    ) -> anyhow::Result<ControlPlane> {
        args.extend([
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
            "--api-addr".to_owned(),
            api_addr.to_string(),
            "--diagnostics-addr".to_owned(),
            diagnostics_addr.to_string(),
        ]);
        let log_path = data_dir.with_extension(format!("{}.log", api_addr.port()));
        let mut cp = ControlPlane {
            child: None,
            binary,
            args,
            data_dir: data_dir.to_owned(),
            api_addr,
            diagnostics_addr,
            kds_addr: None,
            dp_addr: None,
            log_path,
            _tmp: None,
        };
        cp.respawn()?;
        Ok(cp)
    }

    fn respawn(&mut self) -> anyhow::Result<()> {
        if let Some(parent) = self.log_path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let child = Command::new(bin(self.binary))
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", self.binary))?;
        self.child = Some(child);
        Ok(())
    }

    /// Starts the process again (after a kill or stop) with the same flags,
    /// ports and data, and waits until it is ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "{} is still running", self.binary);
        self.respawn()?;
        self.wait_ready()
    }

    pub fn wait_ready(&self) -> anyhow::Result<()> {
        let url = format!("http://{}/ready", self.diagnostics_addr);
        let client = reqwest::blocking::Client::new();
        wait_until(&format!("{} /ready", self.binary), START_TIMEOUT, || {
            client
                .get(&url)
                .send()
                .ok()
                .filter(|r| r.status().is_success())
        })
        .with_context(|| format!("{} log:\n{}", self.binary, self.log()))?;
        Ok(())
    }

    /// Issues a zone token on this global through the REST API.
    pub fn zone_token(&self, zone: &str, valid_for: Option<&str>) -> anyhow::Result<String> {
        let mut body = serde_json::json!({ "zone": zone });
        if let Some(v) = valid_for {
            body["validFor"] = v.into();
        }
        self.issue_token("/tokens/zone", &body)
    }

    /// POSTs a token request and returns the token text.
    pub fn issue_token(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<String> {
        let r = self.client().request(
            reqwest::Method::POST,
            path,
            Some(("application/json", &body.to_string())),
            &[],
        );
        anyhow::ensure!(
            r.status == 200,
            "token request answered {}: {:?}",
            r.status,
            r.body
        );
        r.body
            .as_str()
            .map(str::to_owned)
            .context("the token is text")
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("admin-token")
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_path())
            .expect("admin token file")
            .trim()
            .to_owned()
    }

    /// A REST client that sends the admin token.
    pub fn client(&self) -> ApiClient {
        ApiClient::new(&self.api_url(), Some(self.token()))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs `meshctl` against this CP with its admin token.
    pub fn meshctl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        meshctl(&self.api_url(), Some(&self.token_path()), args, stdin)
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("process is running");
        child.kill().expect("kill -9");
        child.wait().expect("reap")
    }

    /// SIGTERM, then waits up to `timeout` for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().expect("process is running");
        signal(&child, Signal::SIGTERM);
        let status = wait_until("process to exit", timeout, || {
            child.try_wait().ok().flatten()
        });
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// Waits for the process to exit on its own (e.g. refused to start).
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().expect("process is running");
        let status = wait_until("process to exit", timeout, || {
            child.try_wait().ok().flatten()
        })?;
        self.child = None;
        Ok(status)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), sig);
    }
}

/// Runs `meshctl` with the given API address and token file.
pub fn meshctl(
    api_url: &str,
    token_file: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    let mut cmd = Command::new(bin("meshctl"));
    cmd.args(args)
        .env("MESHCTL_API_ADDR", api_url)
        .env_remove("MESHCTL_TOKEN")
        .env_remove("MESHCTL_TOKEN_FILE")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token_file {
        cmd.env("MESHCTL_TOKEN_FILE", t);
    }
    let mut child = cmd.spawn().expect("spawn meshctl");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input.as_bytes())
            .expect("write meshctl stdin");
    }
    child.wait_with_output().expect("meshctl output")
}

/// A small blocking REST client for tests and benchmarks.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: reqwest::blocking::Client,
}

/// Status and parsed JSON body of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: serde_json::Value,
    pub etag: Option<String>,
}

impl ApiClient {
    pub fn new(base: &str, token: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
        }
    }

    pub fn with_token(&self, token: Option<&str>) -> Self {
        Self {
            token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, &str)>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((content_type, text)) = body {
            req = req
                .header("content-type", content_type)
                .body(text.to_owned());
        }
        let resp = req.send().expect("request reaches the control plane");
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Reply { status, body, etag }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request(reqwest::Method::GET, path, None, &[])
    }

    pub fn put_yaml(&self, path: &str, yaml: &str) -> Reply {
        self.request(
            reqwest::Method::PUT,
            path,
            Some(("application/yaml", yaml)),
            &[],
        )
    }

    pub fn put_json(&self, path: &str, json: &serde_json::Value) -> Reply {
        self.request(
            reqwest::Method::PUT,
            path,
            Some(("application/json", &json.to_string())),
            &[],
        )
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request(reqwest::Method::DELETE, path, None, &[])
    }
}

/// A TrafficPermission as Kuma Universal JSON.
pub fn traffic_permission(
    mesh: &str,
    name: &str,
    source: &str,
    destination: &str,
) -> serde_json::Value {
    serde_json::json!({
        "type": "TrafficPermission",
        "mesh": mesh,
        "name": name,
        "sources": [{ "match": { "kuma.io/service": source } }],
        "destinations": [{ "match": { "kuma.io/service": destination } }],
    })
}
