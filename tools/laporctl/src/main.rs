//! `laporctl`: what an operator does by hand. Reads the same configuration as the services
//! (`LAPOR__AMQP__URL`, `LAPOR__DATABASE__URL`, ...).

use anyhow::{Context as _, bail};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapor_shared::broker_admin::BrokerAdmin;
use lapor_shared::config::Settings;
use lapor_shared::data::{DataSource, ReferenceData};
use lapor_shared::db::parked;
use lapor_shared::domain::{TrackingId, UnitCode};
use lapor_shared::messages::{FollowupStatus, FollowupV1, exchange, schema};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  laporctl units list
  laporctl units provision <CODE>        create (or rotate) the unit's RabbitMQ user; prints its credentials once
  laporctl units listen <CODE> [--count N] [--timeout SECS]
                                         print the unit's deliveries as JSON lines and acknowledge them
                                         (connects with LAPOR_UNIT_AMQP_URL when set, else LAPOR__AMQP__URL)
  laporctl units followup <CODE> <TRACKING_ID> <acknowledged|in_progress|delegated|resolved|returned>
                                         [--note TEXT] [--delegate-to UPT]
  laporctl parked list [--all]
  laporctl parked redrive <ID>";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laporctl: {e:#}");
            if e.to_string().starts_with("usage") || e.downcast_ref::<Usage>().is_some() {
                eprintln!("{USAGE}");
            }
            ExitCode::from(2)
        }
    }
}

#[derive(Debug)]
struct Usage(String);
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    Usage(msg.into()).into()
}

fn flag<'a>(args: &'a [String], name: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| a == name) {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .map(|v| Some(v.as_str()))
            .ok_or_else(|| usage(format!("{name} needs a value"))),
    }
}

async fn run(args: &[String]) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["units", "list", ..] => units_list(&settings),
        ["units", "provision", code, ..] => provision(&settings, code).await,
        ["units", "listen", code, rest @ ..] => {
            listen(
                &settings,
                code,
                &rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .await
        }
        ["units", "followup", code, tracking, status, rest @ ..] => {
            followup(
                &settings,
                code,
                tracking,
                status,
                &rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .await
        }
        ["parked", "list", rest @ ..] => parked_list(&settings, rest.contains(&"--all")).await,
        ["parked", "redrive", id] => parked_redrive(&settings, id).await,
        ["help" | "-h" | "--help"] | [] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(usage(format!("unknown command: {}", words.join(" ")))),
    }
}

fn reference(settings: &Settings) -> anyhow::Result<ReferenceData> {
    Ok(ReferenceData::load(&DataSource::new(settings.data.dir()))?)
}

fn known_unit(settings: &Settings, code: &str) -> anyhow::Result<(UnitCode, ReferenceData)> {
    let code = UnitCode::parse(code).map_err(|e| usage(format!("{code:?}: {e}")))?;
    let data = reference(settings)?;
    if !data.units.contains(&code) {
        bail!("{code} is not in the unit registry (laporctl units list shows the codes)");
    }
    Ok((code, data))
}

fn units_list(settings: &Settings) -> anyhow::Result<()> {
    for u in reference(settings)?.units.iter() {
        println!("{}\t{:?}\t{}", u.code, u.kind, u.name);
    }
    Ok(())
}

/// The unit's RabbitMQ user may read only its own queue and publish only follow-ups under its
/// own code; it may configure nothing.
async fn provision(settings: &Settings, code: &str) -> anyhow::Result<()> {
    let (code, _) = known_unit(settings, code)?;
    let admin = BrokerAdmin::detect(&settings.amqp).await?;
    let creds = lapor_shared::units::provision(settings, &admin, &code).await?;
    println!("{}", serde_json::to_string(&creds)?);
    eprintln!(
        "(credentials shown once; provision again to rotate them; via {})",
        admin.method()
    );
    Ok(())
}

/// The reference consumer a unit's developers copy: consume, handle, acknowledge after
/// handling, deduplicate on `message_id`.
async fn listen(settings: &Settings, code: &str, args: &[String]) -> anyhow::Result<()> {
    let code = UnitCode::parse(code).map_err(|e| usage(format!("{code:?}: {e}")))?;
    let count: Option<usize> = flag(args, "--count")?
        .map(str::parse)
        .transpose()
        .map_err(|_| usage("--count must be a number"))?;
    let timeout: Option<u64> = flag(args, "--timeout")?
        .map(str::parse)
        .transpose()
        .map_err(|_| usage("--timeout must be seconds"))?;
    let url = std::env::var("LAPOR_UNIT_AMQP_URL").unwrap_or_else(|_| settings.amqp.url.clone());
    let conn = lapin::Connection::connect(
        &url,
        lapin::ConnectionProperties::default()
            .with_connection_name(format!("{code} listener").into()),
    )
    .await
    .context("connecting to RabbitMQ")?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(16, Default::default()).await?;
    let mut consumer = ch
        .basic_consume(
            code.queue().as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {}", code.queue()))?;
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    let deadline = timeout.map(|t| tokio::time::Instant::now() + Duration::from_secs(t));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, consumer.next()).await {
                Ok(x) => x,
                Err(_) => break,
            },
            None => consumer.next().await,
        };
        let Some(delivery) = next else { break };
        let d = delivery?;
        let body: serde_json::Value =
            serde_json::from_slice(&d.data).unwrap_or(serde_json::Value::Null);
        let id = body
            .get("message_id")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        // A redelivery carries the same message_id: handle it once.
        if seen.insert(id) {
            println!(
                "{}",
                serde_json::json!({ "routing_key": d.routing_key.as_str(), "redelivered": d.redelivered, "message": body })
            );
        }
        d.acker.ack(BasicAckOptions::default()).await?;
        n += 1;
        if count.is_some_and(|c| n >= c) {
            break;
        }
    }
    conn.close(200, "done".into()).await.ok();
    Ok(())
}

async fn followup(
    settings: &Settings,
    code: &str,
    tracking: &str,
    status: &str,
    args: &[String],
) -> anyhow::Result<()> {
    let (code, _) = known_unit(settings, code)?;
    let tracking_id =
        TrackingId::parse(tracking).map_err(|e| usage(format!("tracking id {tracking:?}: {e}")))?;
    let status: FollowupStatus = serde_json::from_value(serde_json::Value::String(status.to_owned()))
        .map_err(|_| usage(format!("status {status:?} is not one of acknowledged, in_progress, delegated, resolved, returned")))?;
    let delegate_to = flag(args, "--delegate-to")?
        .map(UnitCode::parse)
        .transpose()
        .map_err(|e| usage(format!("--delegate-to: {e}")))?;
    if (status == FollowupStatus::Delegated) != delegate_to.is_some() {
        return Err(usage(
            "--delegate-to is required with delegated, and only with it",
        ));
    }
    let pool = sqlx::PgPool::connect(&settings.database.url)
        .await
        .context("connecting to PostgreSQL")?;
    let case_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM cases WHERE tracking_id = $1")
        .bind(tracking_id.to_string())
        .fetch_optional(&pool)
        .await?
        .with_context(|| format!("no case with tracking id {tracking_id}"))?;
    let msg = FollowupV1 {
        schema: schema::FOLLOWUP_V1.to_owned(),
        message_id: uuid::Uuid::now_v7(),
        case_id,
        tracking_id,
        occurred_at: chrono::Utc::now(),
        unit: code.clone(),
        status,
        note: flag(args, "--note")?.map(str::to_owned),
        delegate_to,
    };
    let url = std::env::var("LAPOR_UNIT_AMQP_URL").unwrap_or_else(|_| settings.amqp.url.clone());
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ")?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let confirm = ch
        .basic_publish(
            exchange::FOLLOWUP.into(),
            code.key("followup").as_str().into(),
            BasicPublishOptions::default(),
            &serde_json::to_vec(&msg)?,
            lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(msg.message_id.to_string().into()),
        )
        .await?
        .await?;
    if !confirm.is_ack() {
        bail!("the broker refused the follow-up");
    }
    conn.close(200, "done".into()).await.ok();
    println!(
        "{}",
        serde_json::json!({ "message_id": msg.message_id, "case_id": case_id, "status": status })
    );
    Ok(())
}

async fn parked_list(settings: &Settings, all: bool) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(&settings.database.url)
        .await
        .context("connecting to PostgreSQL")?;
    for row in parked::list(&pool, all, 1000).await? {
        println!("{}", serde_json::to_string(&row)?);
    }
    Ok(())
}

async fn parked_redrive(settings: &Settings, id: &str) -> anyhow::Result<()> {
    let id: i64 = id
        .parse()
        .map_err(|_| usage(format!("{id:?} is not a parked message id")))?;
    let pool = sqlx::PgPool::connect(&settings.database.url)
        .await
        .context("connecting to PostgreSQL")?;
    let message_id = parked::redrive(&pool, id).await?;
    println!(
        "{}",
        serde_json::json!({ "redriven": id, "message_id": message_id })
    );
    eprintln!("(queued in the outbox; a running service's relay publishes it)");
    Ok(())
}
