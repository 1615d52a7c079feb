//! `runner`: the process in an atlas-operator Job pod.
//!
//! This build knows the contract version only; the `migrate`, `schema` and `wait` commands that
//! drive Atlas are not part of it yet (see the README's feature table).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("--version") | Some("-V") => {
            println!(
                "runner {} (contract v{})",
                env!("CARGO_PKG_VERSION"),
                atlas_runner::CONTRACT_VERSION
            );
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "runner {}: no apply command is available in this build; \
                 only --version is supported",
                env!("CARGO_PKG_VERSION")
            );
            ExitCode::from(2)
        }
    }
}
