use lapor_shared::config::Settings;
use std::process::ExitCode;

// One thread: see `lapor_shared::service::main`.
#[tokio::main(flavor = "current_thread")]
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
