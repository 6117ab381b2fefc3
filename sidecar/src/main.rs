use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sidecar",
    version,
    about = "Runs Envoy for a workload, configured by its zone control plane"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Register the Dataplane, start Envoy and keep it running.
    #[command(
        after_help = "Example:\n  sidecar run --cp-address https://127.0.0.1:5678 --ca-cert-file zone/dp-server-ca.pem \\\n    --dataplane-file web.yaml --dataplane-token-file web.token"
    )]
    Run(sidecar::RunConfig),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Cmd::Run(cfg) = Cli::parse().command;
    match sidecar::run(cfg).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
