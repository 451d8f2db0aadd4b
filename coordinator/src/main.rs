//! `rerank-coordinator`: route a cluster's client API to its nodes.

use anyhow::Context;
use clap::Parser;
use rerank_shared::config::CoordinatorConfig;

#[derive(Parser)]
#[command(
    name = "rerank-coordinator",
    version,
    about = "The rerank-cluster gateway"
)]
struct Cli {
    /// Print the effective settings (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = CoordinatorConfig::from_env()?;
    if cli.print_config {
        println!("{}", serde_json::to_string_pretty(&config.masked())?);
        return Ok(());
    }
    let telemetry = rerank_shared::telemetry::init(
        "rerank-coordinator",
        config.otel_exporter_otlp_endpoint.as_deref(),
    );
    let served = actix_web::rt::System::new().block_on(rerank_coordinator::server::serve(config));
    telemetry.shutdown();
    served.context("coordinator stopped")
}
