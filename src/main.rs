use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Kubernetes operator that rents prepaid hosts from the Xuandashi cloud for RentedHost objects.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run,
    /// Print the RentedHost CustomResourceDefinition as YAML.
    Crd,
    /// Serve the provider simulator.
    Simulate {
        /// Port to listen on (127.0.0.1).
        #[arg(long, default_value_t = 8090)]
        port: u16,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", rentedhost_operator::api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run => not_yet("run"),
        Command::Simulate { .. } => not_yet("simulate"),
    }
}

fn not_yet(command: &str) -> ExitCode {
    eprintln!("rentedhost-operator {command}: not implemented yet");
    ExitCode::FAILURE
}
