use clap::{Args, Parser, Subcommand};
use rentedhost_operator::controller::{self, credentials::SecretRef};
use rentedhost_operator::metrics::Metrics;
use rentedhost_operator::provider::{self, ClientSettings};
use rentedhost_operator::simulator::{self, Simulator};
use rentedhost_operator::telemetry::{self, LogFormat, parse_duration};
use rentedhost_operator::{http, leader};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Kubernetes operator that rents prepaid hosts from the Xuandashi cloud for RentedHost objects.
#[derive(Parser)]
#[command(version, about)]
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
    /// Print the RentedHost CustomResourceDefinition as YAML.
    Crd,
    /// Serve the provider simulator (demo account `demo-account`, secret `demo-secret`).
    Simulate {
        /// Port to listen on, on 127.0.0.1.
        #[arg(long, default_value_t = 8090)]
        port: u16,
        /// Token lifetime the simulator grants.
        #[arg(long, default_value = "30m", value_parser = parse_duration)]
        token_lifetime: Duration,
        /// Time a host takes to start or stop.
        #[arg(long, default_value = "3s", value_parser = parse_duration)]
        transition_time: Duration,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Base URL of the provider API (production by default).
    #[arg(long, env = "PROVIDER_URL", default_value = provider::PRODUCTION_URL)]
    provider_url: String,
    /// Use the provider's sandbox instead of production.
    #[arg(long, conflicts_with = "provider_url")]
    sandbox: bool,
    /// Secret holding the default credentials (keys `uuid` and `secret`).
    #[arg(long, env = "CREDENTIALS_SECRET")]
    credentials_secret: Option<String>,
    /// The operator's own namespace: its default credentials Secret and its Lease live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    operator_namespace: String,
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Host poll interval.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Poll interval while a host is starting or stopping.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    fast_poll_interval: Duration,
    /// How long a createRent with a lost answer may take to show its host.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    create_grace: Duration,
    /// Timeout of every provider call.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// Provider requests per second per account.
    #[arg(long, default_value_t = 5.0)]
    rate_limit: f64,
    /// Provider request burst per account.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Address of the HTTP port (/metrics, /healthz, /readyz).
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: std::net::SocketAddr,
    /// Elect a leader on a Lease, so that of several replicas one reconciles.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the Lease (in the operator's namespace).
    #[arg(long, default_value = "rentedhost-operator")]
    lease_name: String,
    /// Lease duration: a replica that stops renewing loses the lease this long after.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Crd => {
            print!("{}", rentedhost_operator::api::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Run(args) => runtime().block_on(run(*args)),
        Command::Simulate {
            port,
            token_lifetime,
            transition_time,
        } => runtime().block_on(simulate(port, token_lifetime, transition_time)),
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
    let client = match kube_client().await {
        Ok(c) => c,
        Err(error) => {
            eprintln!("rentedhost-operator run: cannot reach Kubernetes: {error}");
            return ExitCode::FAILURE;
        }
    };
    let leadership = if args.leader_election {
        leader::Leadership::elected()
    } else {
        leader::Leadership::always()
    };
    let config = controller::Config {
        provider: ClientSettings {
            base_url: if args.sandbox {
                provider::SANDBOX_URL.to_string()
            } else {
                args.provider_url
            },
            timeout: args.request_timeout,
            requests_per_second: args.rate_limit,
            burst: args.burst,
            ..ClientSettings::default()
        },
        default_credentials: args
            .credentials_secret
            .map(|name| SecretRef::new(&args.operator_namespace, &name)),
        namespace: args.namespace,
        poll_interval: args.poll_interval,
        fast_poll_interval: args.fast_poll_interval,
        create_grace: args.create_grace,
        concurrency: args.concurrency,
        instance: std::env::var("POD_NAME").ok(),
        leadership: leadership.clone(),
        ..controller::Config::default()
    };
    let metrics = Arc::new(Metrics::default());
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
    tracing::info!(provider = %config.provider.base_url, "starting controller");
    if !args.leader_election {
        controller::run(client, config, metrics, shutdown_signal()).await;
        return ExitCode::SUCCESS;
    }
    let lease = leader::LeaseConfig {
        namespace: args.operator_namespace.clone(),
        name: args.lease_name,
        identity: std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("rentedhost-operator-{}", std::process::id())),
        duration: args.lease_duration,
        leadership,
    };
    let work =
        |stop: leader::Shutdown| controller::run(client.clone(), config, metrics, stop.wait());
    match leader::run_elected(client.clone(), lease, shutdown_signal(), work).await {
        leader::Ended::Stopped => ExitCode::SUCCESS,
        leader::Ended::LostLease => ExitCode::FAILURE,
    }
}

/// The Kubernetes client, with a read timeout: kube sets none, and a call that never answers
/// would hold a reconcile (or a lease renewal) forever. Watches are long polls that the API
/// server ends well within it (kube-rs's watcher asks for 290 s).
async fn kube_client() -> Result<kube::Client, kube::Error> {
    let mut config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    config.read_timeout = Some(Duration::from_secs(300));
    kube::Client::try_from(config)
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

async fn simulate(port: u16, token_lifetime: Duration, transition_time: Duration) -> ExitCode {
    let sim = Simulator::default();
    sim.state().timing = simulator::Timing {
        token_lifetime,
        ..simulator::fast_timing(transition_time)
    };
    match sim.serve(port).await {
        Ok((addr, task)) => {
            eprintln!(
                "provider simulator on http://{addr} (account {})",
                simulator::catalogue::DEMO_ACCOUNT.0
            );
            tokio::select! {
                _ = task => {}
                _ = shutdown_signal() => {}
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("rentedhost-operator simulate: cannot listen on port {port}: {error}");
            ExitCode::FAILURE
        }
    }
}
