use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    llmrl::model::device::keep_freed_host_memory();
    let cli = llmrl::cli::Cli::parse();
    match llmrl::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
