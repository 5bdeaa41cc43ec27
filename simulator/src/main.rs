use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;
use xds_simulator::{Simulator, Timing, catalogue::DEMO_ACCOUNT, fast_timing};

/// Serve the Xuandashi API simulator (demo account `demo-account`, secret `demo-secret`).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Port to listen on, on 127.0.0.1.
    #[arg(long, default_value_t = 8090)]
    port: u16,
    /// Token lifetime the simulator grants.
    #[arg(long, default_value = "30m", value_parser = duration)]
    token_lifetime: Duration,
    /// Time a host takes to start or stop.
    #[arg(long, default_value = "3s", value_parser = duration)]
    transition_time: Duration,
    /// Time every answer takes (a provider far away).
    #[arg(long, value_parser = duration)]
    latency: Option<Duration>,
    /// Running hosts the demo account already has at start (a large account).
    #[arg(long, default_value_t = 0)]
    hosts: usize,
}

fn duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 3s or 50ms"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let sim = Simulator::default();
    sim.state().timing = Timing {
        token_lifetime: cli.token_lifetime,
        latency: cli.latency.unwrap_or_default(),
        ..fast_timing(cli.transition_time)
    };
    sim.populate(DEMO_ACCOUNT.0, cli.hosts);
    let (addr, task) = match sim.serve(cli.port).await {
        Ok(served) => served,
        Err(error) => {
            eprintln!("xds-simulator: cannot listen on port {}: {error}", cli.port);
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "provider simulator on http://{addr} (account {})",
        DEMO_ACCOUNT.0
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = task => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["xds-simulator", "--latency", "50ms"]);
        assert_eq!(cli.latency, Some(Duration::from_millis(50)));
        assert!(Cli::try_parse_from(["xds-simulator", "--latency", "-1s"]).is_err());
    }
}
