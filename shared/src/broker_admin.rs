//! Administering RabbitMQ beyond what AMQP can do (vhosts, users, permissions), through the
//! management API when it answers, otherwise through `rabbitmqctl`. Used by `laporctl` and by
//! the test harness (a fresh vhost per test run).

use crate::config::AmqpSettings;
use lapin::uri::AMQPUri;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "cannot administer RabbitMQ: the management API at {url} did not answer ({why}) and rabbitmqctl is not usable here. \
         Enable the management plugin (rabbitmq-plugins enable rabbitmq_management) and set LAPOR__AMQP__MANAGEMENT_URL, \
         or run this where rabbitmqctl can reach the node"
    )]
    Unavailable { url: String, why: String },
    #[error("RabbitMQ refused {what}: {detail}")]
    Refused { what: String, detail: String },
    #[error("AMQP URL: {0}")]
    Url(String),
}

#[derive(Debug, Clone)]
enum Backend {
    Http {
        base: String,
        user: String,
        password: String,
        client: reqwest::Client,
    },
    Ctl,
}

#[derive(Debug, Clone)]
pub struct BrokerAdmin {
    backend: Backend,
    /// The vhost the AMQP URL names.
    pub vhost: String,
    /// Host and port of the AMQP listener, for URLs handed to units.
    pub amqp_host: String,
    pub amqp_port: u16,
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl BrokerAdmin {
    /// Finds a way to administer the broker named in `settings`.
    pub async fn detect(settings: &AmqpSettings) -> Result<Self, AdminError> {
        let uri = AMQPUri::from_str(&settings.url).map_err(AdminError::Url)?;
        let host = uri.authority.host.clone();
        let user = uri.authority.userinfo.username.clone();
        let password = uri.authority.userinfo.password.clone();
        let base = if settings.management_url.is_empty() {
            format!("http://{host}:15672")
        } else {
            settings.management_url.trim_end_matches('/').to_owned()
        };
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AdminError::Url(e.to_string()))?;
        let probe = client
            .get(format!("{base}/api/overview"))
            .basic_auth(&user, Some(&password))
            .send()
            .await;
        let backend = match probe {
            Ok(r) if r.status().is_success() => Backend::Http {
                base,
                user,
                password,
                client,
            },
            other => {
                let why = match other {
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                let ctl = tokio::process::Command::new("rabbitmqctl")
                    .args(["-q", "list_vhosts"])
                    .output()
                    .await;
                match ctl {
                    Ok(o) if o.status.success() => Backend::Ctl,
                    _ => return Err(AdminError::Unavailable { url: base, why }),
                }
            }
        };
        Ok(Self {
            backend,
            vhost: uri.vhost.clone(),
            amqp_host: host,
            amqp_port: uri.authority.port,
        })
    }

    pub fn method(&self) -> &'static str {
        match self.backend {
            Backend::Http { .. } => "management API",
            Backend::Ctl => "rabbitmqctl",
        }
    }

    async fn http(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<reqwest::Response, AdminError> {
        let Backend::Http {
            base,
            user,
            password,
            client,
        } = &self.backend
        else {
            return Err(AdminError::Refused {
                what: what.into(),
                detail: "no management API".into(),
            });
        };
        let mut req = client
            .request(method, format!("{base}{path}"))
            .basic_auth(user, Some(password));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| AdminError::Refused {
            what: what.into(),
            detail: e.to_string(),
        })?;
        if resp.status().is_success()
            || resp.status() == reqwest::StatusCode::NOT_FOUND && what.starts_with("delete")
        {
            Ok(resp)
        } else {
            let status = resp.status();
            let detail = resp.text().await.unwrap_or_default();
            Err(AdminError::Refused {
                what: what.into(),
                detail: format!("HTTP {status}: {detail}"),
            })
        }
    }

    async fn ctl(&self, args: &[&str], what: &str) -> Result<String, AdminError> {
        let out = tokio::process::Command::new("rabbitmqctl")
            .arg("-q")
            .args(args)
            .output()
            .await
            .map_err(|e| AdminError::Refused {
                what: what.into(),
                detail: e.to_string(),
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(AdminError::Refused {
                what: what.into(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    pub async fn create_vhost(&self, vhost: &str) -> Result<(), AdminError> {
        match &self.backend {
            Backend::Http { .. } => self
                .http(
                    reqwest::Method::PUT,
                    &format!("/api/vhosts/{}", enc(vhost)),
                    None,
                    "create vhost",
                )
                .await
                .map(|_| ()),
            Backend::Ctl => self
                .ctl(&["add_vhost", vhost], "create vhost")
                .await
                .map(|_| ()),
        }
    }

    pub async fn delete_vhost(&self, vhost: &str) -> Result<(), AdminError> {
        match &self.backend {
            Backend::Http { .. } => self
                .http(
                    reqwest::Method::DELETE,
                    &format!("/api/vhosts/{}", enc(vhost)),
                    None,
                    "delete vhost",
                )
                .await
                .map(|_| ()),
            Backend::Ctl => self
                .ctl(&["delete_vhost", vhost], "delete vhost")
                .await
                .map(|_| ()),
        }
    }

    pub async fn list_vhosts(&self) -> Result<Vec<String>, AdminError> {
        match &self.backend {
            Backend::Http { .. } => {
                let r = self
                    .http(reqwest::Method::GET, "/api/vhosts", None, "list vhosts")
                    .await?;
                let v: Vec<serde_json::Value> =
                    r.json().await.map_err(|e| AdminError::Refused {
                        what: "list vhosts".into(),
                        detail: e.to_string(),
                    })?;
                Ok(v.iter()
                    .filter_map(|x| x.get("name").and_then(|n| n.as_str()).map(str::to_owned))
                    .collect())
            }
            Backend::Ctl => Ok(self
                .ctl(&["list_vhosts", "name"], "list vhosts")
                .await?
                .lines()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect()),
        }
    }

    /// Creates the user, or sets a new password if it exists.
    pub async fn put_user(&self, user: &str, password: &str) -> Result<(), AdminError> {
        match &self.backend {
            Backend::Http { .. } => self
                .http(
                    reqwest::Method::PUT,
                    &format!("/api/users/{}", enc(user)),
                    Some(serde_json::json!({ "password": password, "tags": "" })),
                    "create user",
                )
                .await
                .map(|_| ()),
            Backend::Ctl => {
                if self
                    .ctl(&["add_user", user, password], "create user")
                    .await
                    .is_err()
                {
                    self.ctl(&["change_password", user, password], "change password")
                        .await?;
                }
                Ok(())
            }
        }
    }

    pub async fn delete_user(&self, user: &str) -> Result<(), AdminError> {
        match &self.backend {
            Backend::Http { .. } => self
                .http(
                    reqwest::Method::DELETE,
                    &format!("/api/users/{}", enc(user)),
                    None,
                    "delete user",
                )
                .await
                .map(|_| ()),
            Backend::Ctl => self
                .ctl(&["delete_user", user], "delete user")
                .await
                .map(|_| ()),
        }
    }

    /// Resource permissions (regular expressions for configure, write, read) on `vhost`.
    pub async fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        match &self.backend {
            Backend::Http { .. } => self
                .http(
                    reqwest::Method::PUT,
                    &format!("/api/permissions/{}/{}", enc(vhost), enc(user)),
                    Some(
                        serde_json::json!({ "configure": configure, "write": write, "read": read }),
                    ),
                    "set permissions",
                )
                .await
                .map(|_| ()),
            Backend::Ctl => self
                .ctl(
                    &["set_permissions", "-p", vhost, user, configure, write, read],
                    "set permissions",
                )
                .await
                .map(|_| ()),
        }
    }

    /// Topic permissions: which routing keys `user` may publish (write) on `exchange`.
    pub async fn set_topic_permissions(
        &self,
        vhost: &str,
        user: &str,
        exchange: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        match &self.backend {
            Backend::Http { .. } => self
                .http(
                    reqwest::Method::PUT,
                    &format!("/api/topic-permissions/{}/{}", enc(vhost), enc(user)),
                    Some(serde_json::json!({ "exchange": exchange, "write": write, "read": read })),
                    "set topic permissions",
                )
                .await
                .map(|_| ()),
            Backend::Ctl => self
                .ctl(
                    &[
                        "set_topic_permissions",
                        "-p",
                        vhost,
                        user,
                        exchange,
                        write,
                        read,
                    ],
                    "set topic permissions",
                )
                .await
                .map(|_| ()),
        }
    }
}

/// An AMQP URL for `vhost` with other credentials, on the same host.
pub fn amqp_url(host: &str, port: u16, user: &str, password: &str, vhost: &str) -> String {
    format!(
        "amqp://{}:{}@{host}:{port}/{}",
        enc(user),
        enc(password),
        enc(vhost)
    )
}
