use clap::{Args, Parser, Subcommand};
use rentedhost_operator::controller;
use rentedhost_operator::metrics::Metrics;
use rentedhost_operator::provider;
use rentedhost_operator::telemetry::{self, LogFormat};
use rentedhost_operator::{http, leader, operator};
use std::process::ExitCode;
use std::sync::Arc;

/// The version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("RENTEDHOST_COMMIT"),
    ")"
);

/// Kubernetes operator that rents prepaid hosts from the Xuandashi cloud for RentedHost objects.
#[derive(Parser)]
#[command(version = VERSION, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (all of them, or one kind's).
    Crd {
        /// Only this kind's CRD.
        #[arg(long, value_enum)]
        kind: Option<rentedhost_operator::api::Kind>,
    },
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: controller::Config,
    #[command(flatten)]
    election: leader::Election,
    /// Use the provider's sandbox instead of production.
    #[arg(long, conflicts_with = "base_url")]
    sandbox: bool,
    /// Address of the HTTP port (/metrics, /healthz, /readyz).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: std::net::SocketAddr,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Crd { kind } => {
            let yaml = match kind {
                Some(kind) => kind.crd_yaml(),
                None => rentedhost_operator::api::crd_yaml(),
            };
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Command::Run(args) => runtime().block_on(run(*args)),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

async fn run(args: RunArgs) -> ExitCode {
    provider::install_crypto_provider();
    let metrics = Arc::new(Metrics::default());
    let client = match rentedhost_operator::kube_client::infer(metrics.clone()).await {
        Ok(c) => c,
        Err(error) => {
            eprintln!("rentedhost-operator run: cannot reach Kubernetes: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut config = args.config;
    if args.sandbox {
        config.provider.base_url = provider::SANDBOX_URL.to_string();
    }
    match http::serve(args.http_addr, metrics.clone()).await {
        Ok(addr) => tracing::info!(%addr, "serving /metrics, /healthz, /readyz"),
        Err(error) => {
            eprintln!(
                "rentedhost-operator run: cannot listen on {}: {error}",
                args.http_addr
            );
            return ExitCode::FAILURE;
        }
    }
    tracing::info!(version = VERSION, provider = %config.provider.base_url, "starting controller");
    let identity = match &config.instance {
        Some(pod) => pod.clone(),
        None => format!("rentedhost-operator-{}", std::process::id()),
    };
    let election = args.election.lease(&config.home.namespace, &identity);
    match operator::run_replica(client, config, metrics, election, shutdown_signal()).await {
        leader::Ended::Stopped => ExitCode::SUCCESS,
        leader::Ended::LostLease => ExitCode::FAILURE,
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn the_command_line_is_consistent_and_defaults_live_in_one_place() {
        Cli::command().debug_assert();
        let cli = Cli::parse_from(["rentedhost-operator", "run", "--poll-interval", "2m"]);
        let Command::Run(args) = cli.command else {
            panic!("run")
        };
        let defaults = controller::Config::default();
        assert_eq!(args.config.poll_interval, Duration::from_secs(120));
        assert_eq!(args.config.create_grace, defaults.create_grace);
        assert_eq!(args.config.provider.timeout, defaults.provider.timeout);
        assert_eq!(defaults.create_grace, Duration::from_secs(120));
        assert_eq!(defaults.provider.base_url, provider::PRODUCTION_URL);
        for zero in ["0s", "-1s", "5"] {
            let refused =
                Cli::try_parse_from(["rentedhost-operator", "run", "--create-grace", zero]);
            assert!(refused.is_err(), "{zero}");
        }
        use rentedhost_operator::api::DeletionPolicy;
        assert_eq!(defaults.default_deletion_policy, DeletionPolicy::Delete);
        for (given, wanted) in [
            ("Orphan", DeletionPolicy::Orphan),
            ("delete", DeletionPolicy::Delete),
        ] {
            let flag = format!("--default-deletion-policy={given}");
            let cli = Cli::parse_from(["rentedhost-operator", "run", &flag]);
            let Command::Run(args) = cli.command else {
                panic!("run")
            };
            assert_eq!(args.config.default_deletion_policy, wanted, "{given}");
        }
        let wrong = [
            "rentedhost-operator",
            "run",
            "--default-deletion-policy=Keep",
        ];
        assert!(Cli::try_parse_from(wrong).is_err());
        let home = [
            "rentedhost-operator",
            "run",
            "--credentials-secret=xds",
            "--operator-namespace=ops",
        ];
        let Command::Run(args) = Cli::parse_from(home).command else {
            panic!("run")
        };
        let secret = args.config.home.default_credentials().unwrap();
        assert_eq!(
            (secret.namespace.as_str(), secret.name.as_str()),
            ("ops", "xds")
        );
        assert_eq!(defaults.retry_scale, 1.0, "the retry table at full scale");
        assert_eq!(
            defaults.sweep_seen_for, None,
            "the sweep's wait follows the timeout"
        );
        assert_eq!(
            rentedhost_operator::budget::seen_before_sweep(defaults.provider.timeout),
            std::time::Duration::from_secs(150)
        );
        let lease = args.election.lease("ops", "pod-0").unwrap();
        assert_eq!(
            (lease.name.as_str(), lease.namespace.as_str()),
            ("rentedhost-operator", "ops")
        );
        assert_eq!(lease.duration, Duration::from_secs(15));
        let alone = ["rentedhost-operator", "run", "--leader-election=false"];
        let Command::Run(args) = Cli::parse_from(alone).command else {
            panic!("run")
        };
        assert!(args.election.lease("ops", "pod-0").is_none());
    }
}
