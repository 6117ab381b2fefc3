//! The sidecar agent. `sidecar run` registers a Dataplane with its zone
//! control plane (`POST /bootstrap` with the dataplane token, over TLS pinned
//! to the zone's dataplane-server CA), writes the Envoy bootstrap it gets
//! back, then starts Envoy and keeps it running: a crashed Envoy restarts
//! with backoff; SIGTERM drains Envoy's listeners, stops it, and removes the
//! Dataplane. The agent generates no xDS itself.
//!
//! Start at [`RunConfig`] and [`run`].

mod envoy;
mod register;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

pub use envoy::find_envoy;

/// Flags of `sidecar run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunConfig {
    /// The zone's dataplane server, `https://HOST:5678`.
    #[arg(long, env = "SIDECAR_CP_ADDRESS")]
    pub cp_address: String,
    /// CA of the dataplane server (the zone writes <data-dir>/dp-server-ca.pem).
    #[arg(long, env = "SIDECAR_CA_CERT_FILE")]
    pub ca_cert_file: PathBuf,
    /// The Dataplane resource (Kuma Universal YAML).
    #[arg(long, env = "SIDECAR_DATAPLANE_FILE")]
    pub dataplane_file: PathBuf,
    /// The dataplane token (`meshctl generate dataplane-token`).
    #[arg(long, env = "SIDECAR_DATAPLANE_TOKEN_FILE")]
    pub dataplane_token_file: PathBuf,
    /// Envoy binary; default: $ENVOY_BIN, then `envoy` on PATH.
    #[arg(long)]
    pub envoy_bin: Option<PathBuf>,
    /// Envoy's admin port, on 127.0.0.1.
    #[arg(long, env = "SIDECAR_ADMIN_PORT", default_value_t = 9901)]
    pub admin_port: u16,
    /// Where the bootstrap and Envoy's logs go (default: a temp dir).
    #[arg(long, env = "SIDECAR_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// How long Envoy drains its listeners on shutdown.
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub drain_seconds: Duration,
    /// How long to keep retrying an unreachable control plane.
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    pub connect_timeout: Duration,
    /// The ADS variant Envoy speaks to the zone; default: the zone's (delta).
    #[arg(long, env = "SIDECAR_ADS_VARIANT", value_enum)]
    pub ads_variant: Option<AdsVariant>,
    /// What this Envoy is: a workload's sidecar (the file holds a
    /// Dataplane, the token is a dataplane token) or the zone ingress (the
    /// file holds a ZoneIngress, the token is a zone token generated with
    /// `--scope ingress`).
    #[arg(
        long,
        env = "SIDECAR_PROXY_TYPE",
        value_enum,
        default_value = "dataplane"
    )]
    pub proxy_type: ProxyType,
}

/// What a sidecar runs Envoy for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyType {
    Dataplane,
    Ingress,
}

impl ProxyType {
    /// The resource type its file must hold.
    pub fn resource_type(self) -> &'static str {
        match self {
            Self::Dataplane => "Dataplane",
            Self::Ingress => "ZoneIngress",
        }
    }
}

/// Envoy's ADS protocol variant, as the bootstrap request names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AdsVariant {
    /// State of the world: every update carries all resources of its type.
    Sotw,
    /// Incremental: updates carry only what changed.
    Delta,
}

impl AdsVariant {
    /// The `adsVariant` value of the bootstrap request.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sotw => "sotw",
            Self::Delta => "delta",
        }
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("{s:?} is not a number of seconds: {e}"))
}

/// Registers, runs Envoy until a signal, then drains and deregisters.
pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let envoy_bin = find_envoy(cfg.envoy_bin.as_deref())?;
    let dataplane = register::read_dataplane(&cfg.dataplane_file, cfg.proxy_type)?;
    let token = std::fs::read_to_string(&cfg.dataplane_token_file)
        .with_context(|| {
            format!(
                "cannot read the dataplane token {}",
                cfg.dataplane_token_file.display()
            )
        })?
        .trim()
        .to_owned();
    let client = register::Client::new(&cfg.cp_address, &cfg.ca_cert_file)?;
    let bootstrap = client
        .bootstrap(
            &dataplane,
            &token,
            cfg.admin_port,
            cfg.ads_variant,
            cfg.connect_timeout,
        )
        .await?;
    let work_dir = match &cfg.work_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("sidecar-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("cannot create the work dir {}", work_dir.display()))?;
    let bootstrap_path = work_dir.join("envoy-bootstrap.json");
    std::fs::write(&bootstrap_path, serde_json::to_vec_pretty(&bootstrap)?)
        .with_context(|| format!("cannot write {}", bootstrap_path.display()))?;
    tracing::info!(path = %bootstrap_path.display(), "wrote Envoy's bootstrap");

    let supervisor = envoy::Supervisor {
        bin: envoy_bin,
        bootstrap: bootstrap_path,
        admin_port: cfg.admin_port,
        drain: cfg.drain_seconds,
    };
    let result = supervisor.run_until_signal().await;
    if let Err(e) = client.deregister(&dataplane, &token).await {
        tracing::warn!(error = %e, "could not remove the Dataplane; the zone removes it when its stream stays gone");
    } else {
        tracing::info!("Dataplane removed");
    }
    result
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunConfig,
    }

    fn parse(extra: &[&str]) -> Result<RunConfig, clap::Error> {
        let base = [
            "sidecar",
            "--cp-address",
            "https://127.0.0.1:5678",
            "--ca-cert-file",
            "ca.pem",
            "--dataplane-file",
            "dp.yaml",
            "--dataplane-token-file",
            "dp.token",
        ];
        Cli::try_parse_from(base.iter().chain(extra)).map(|c| c.run)
    }

    #[test]
    fn the_ads_variant_is_optional_and_checked() {
        assert_eq!(parse(&[]).map(|c| c.ads_variant).ok(), Some(None));
        let delta = parse(&["--ads-variant", "delta"]).map(|c| c.ads_variant);
        assert_eq!(delta.ok(), Some(Some(AdsVariant::Delta)));
        let sotw = parse(&["--ads-variant", "sotw"]).map(|c| c.ads_variant);
        assert_eq!(sotw.ok().flatten().map(AdsVariant::as_str), Some("sotw"));
        assert!(parse(&["--ads-variant", "rest"]).is_err());
    }
}
