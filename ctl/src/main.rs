use clap::Parser;

fn main() -> std::process::ExitCode {
    match ctl::run(ctl::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
