use chrono::{DateTime, Utc};
use lapor_shared::config::Settings;
use lapor_shared::data::{DataSource, ReferenceData};
use std::process::ExitCode;

const USAGE: &str = "usage:
  sla-monitor                                                   run the SLA monitor
  sla-monitor due --start <RFC 3339> --working-days N [--zone <IANA zone>]
                                                                print the deadline of N working days from START";

fn due(args: &[String], settings: &Settings) -> Result<String, String> {
    let mut start = None;
    let mut days = None;
    let mut zone = settings.sla.zone.clone();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--start" => start = Some(value()?),
            "--working-days" => days = Some(value()?),
            "--zone" => zone = value()?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let start = start.ok_or("--start is required")?;
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(&start)
        .map_err(|e| {
            format!("--start {start:?} is not RFC 3339 (e.g. 2026-12-07T10:00:00+07:00): {e}")
        })?
        .with_timezone(&Utc);
    let days: u32 = days
        .ok_or("--working-days is required")?
        .parse()
        .map_err(|_| "--working-days must be a whole number".to_owned())?;
    let tz: chrono_tz::Tz = zone
        .parse()
        .map_err(|_| format!("--zone {zone:?} is not an IANA time zone (e.g. Asia/Jakarta)"))?;
    let data =
        ReferenceData::load(&DataSource::new(settings.data.dir())).map_err(|e| e.to_string())?;
    for w in data
        .calendar
        .coverage_warnings(start.with_timezone(&tz).date_naive())
    {
        eprintln!("warning: {w}");
    }
    let d = data.calendar.deadline(start, days, tz);
    Ok(d.with_timezone(&tz).to_rfc3339())
}

// One thread: see `lapor_shared::service::main`.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sla-monitor: {e}");
            return ExitCode::from(2);
        }
    };
    match args.first().map(String::as_str) {
        None => serve(settings).await,
        Some("due") => match due(&args[1..], &settings) {
            Ok(d) => {
                println!("{d}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sla-monitor due: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("sla-monitor: unknown command {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

async fn serve(settings: Settings) -> ExitCode {
    lapor_shared::service::main(
        "sla-monitor",
        Ok(settings),
        |settings, clock, shutdown| async move {
            sla_monitor::Monitor::build(settings, clock)
                .await?
                .run_until_stopped(shutdown)
                .await
        },
    )
    .await
}
