use clap::Parser;
use zone_cp::{App, Config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cp_http::process::init_tracing();
    match App::build(Config::parse()).await {
        Ok(app) => cp_http::process::serve_until_signal(|shutdown| app.run(shutdown)).await,
        Err(e) => {
            tracing::error!("cannot start: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
