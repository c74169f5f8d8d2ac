use lapor_shared::config::Settings;
use lapor_shared::data::{DataSource, ReferenceData};
use std::process::ExitCode;
use verifier::classify::Classifier;

const USAGE: &str = "usage:
  verifier                 run the verification service
  verifier classify        classify JSON lines {\"id\",\"channel\",\"text\"} from stdin
  verifier eval FILE       score the classifier on a labelled JSON-lines file [--json]";

fn tools(settings: &Settings) -> Result<(Classifier, ReferenceData), String> {
    let source = DataSource::new(settings.data.dir());
    let classifier =
        Classifier::load(&source, settings.verifier.review_threshold).map_err(|e| e.to_string())?;
    let data = ReferenceData::load(&source).map_err(|e| e.to_string())?;
    Ok((classifier, data))
}

// One thread: see `lapor_shared::service::main`.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("verifier: {e}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None => serve(settings).await,
        Some("classify") => match tools(&settings) {
            Ok((c, data)) => {
                let stdin = std::io::stdin().lock();
                let stdout = std::io::BufWriter::new(std::io::stdout().lock());
                match verifier::cli::classify(&c, &data.routing, stdin, stdout) {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::from(1),
                    Err(e) => {
                        eprintln!("verifier classify: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("verifier: {e}");
                ExitCode::from(2)
            }
        },
        Some("eval") => {
            let Some(path) = args.get(1) else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            let (c, data) = match tools(&settings) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("verifier: {e}");
                    return ExitCode::from(2);
                }
            };
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("verifier eval: cannot read {path}: {e}");
                    return ExitCode::from(2);
                }
            };
            let items = match verifier::eval::parse(&text) {
                Ok(i) => i,
                Err(e) => {
                    eprintln!("verifier eval: {path}: {e}");
                    return ExitCode::from(2);
                }
            };
            let report = verifier::eval::evaluate(&items, &c, &data.routing);
            if args.iter().any(|a| a == "--json") {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", verifier::eval::render(&report));
            }
            ExitCode::SUCCESS
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("verifier: unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    lapor_shared::service::main(
        "verifier",
        Ok(settings),
        |settings, clock, shutdown| async move {
            verifier::Verifier::build(settings, clock)
                .await?
                .run_until_stopped(shutdown)
                .await
        },
    )
    .await
}
