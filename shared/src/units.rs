//! Provisioning a unit's access to the broker: its own RabbitMQ user that may read only
//! `units.<CODE>`, publish only to `lapor.followup` and there only under `<CODE>.followup`
//! (topic permissions), and configure nothing.

use crate::amqp::topology::{QueueSpec, declare_core, declare_queue};
use crate::broker_admin::{self, BrokerAdmin};
use crate::config::Settings;
use crate::domain::UnitCode;
use crate::messages::exchange;
use rand::Rng;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Credentials {
    pub unit: String,
    pub username: String,
    pub password: String,
    pub amqp_url: String,
    pub queue: String,
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if "\\.+*?()|[]{}^$".contains(c) {
                vec!['\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

pub fn username(code: &UnitCode) -> String {
    format!("unit-{}", code.as_str().to_lowercase().replace('_', "-"))
}

/// Creates the unit's user, or gives it a new password (rotation), and makes sure its queue
/// exists (the unit cannot declare it).
pub async fn provision(
    settings: &Settings,
    admin: &BrokerAdmin,
    code: &UnitCode,
) -> anyhow::Result<Credentials> {
    let conn = crate::amqp::connect(&settings.amqp, "unit provisioning").await?;
    let ch = conn.create_channel().await?;
    declare_core(&ch).await?;
    declare_queue(&ch, &QueueSpec::unit(code), settings.amqp.delivery_limit).await?;
    conn.close(200, "done".into()).await.ok();

    let username = username(code);
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    let vhost = admin.vhost.clone();
    admin.put_user(&username, &password).await?;
    let queue = code.queue();
    admin
        .set_permissions(
            &vhost,
            &username,
            "^$",
            &format!("^{}$", regex_escape(exchange::FOLLOWUP)),
            &format!("^{}$", regex_escape(&queue)),
        )
        .await?;
    admin
        .set_topic_permissions(
            &vhost,
            &username,
            exchange::FOLLOWUP,
            &format!("^{}\\.followup$", regex_escape(code.as_str())),
            "^$",
        )
        .await?;
    Ok(Credentials {
        unit: code.to_string(),
        amqp_url: broker_admin::amqp_url(
            &admin.amqp_host,
            admin.amqp_port,
            &username,
            &password,
            &vhost,
        ),
        username,
        password,
        queue,
    })
}
