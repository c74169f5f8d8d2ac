use lapor_shared::{clock, config::Settings, shutdown, telemetry};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("distributor: {e}");
            return ExitCode::from(2);
        }
    };
    let _telemetry = match telemetry::init("distributor", &settings.telemetry) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("distributor: telemetry: {e:#}");
            return ExitCode::from(2);
        }
    };
    let result = async {
        let d = distributor::Distributor::build(settings, clock::system()).await?;
        d.run_until_stopped(shutdown::on_signal()).await
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "distributor failed");
            ExitCode::FAILURE
        }
    }
}
