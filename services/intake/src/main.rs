use lapor_shared::config::Settings;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    lapor_shared::service::main(
        "intake",
        Settings::load(),
        |settings, clock, shutdown| async move {
            intake::Application::build(settings, clock)
                .await?
                .run_until_stopped(shutdown)
                .await
        },
    )
    .await
}
