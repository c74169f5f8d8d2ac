//! Errors as RFC 9457 problem documents (`application/problem+json`). Validation problems
//! list every invalid field with the reason, so a channel can fix them all at once.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Self {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub detail: Option<String>,
    pub errors: Vec<FieldError>,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self {
            status,
            slug,
            title,
            detail: None,
            errors: Vec::new(),
            retry_after_secs: None,
        }
    }

    pub fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }

    pub fn invalid(errors: Vec<FieldError>) -> Self {
        let n = errors.len();
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-fields",
                "Some fields are invalid",
            )
            .detail(format!("{n} field(s) must be corrected; see `errors`"))
        }
    }

    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "The body is not a valid JSON document of this API",
        )
        .detail(reason)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
            .detail(format!("no {what} with this id"))
    }

    /// The database is unreachable or overloaded: the request was not accepted, try again.
    pub fn unavailable() -> Self {
        Self {
            retry_after_secs: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Temporarily unable to accept requests",
            )
            .detail("nothing was stored; retry with the same Idempotency-Key")
        }
    }

    /// Intake already holds as many submissions as it may (`http.submit_in_flight_max`):
    /// this one was neither parsed nor stored; try again in a second.
    pub fn at_capacity() -> Self {
        Self {
            retry_after_secs: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "at-capacity",
                "Too many complaints are being stored right now",
            )
            .detail("nothing was stored; retry after Retry-After with the same Idempotency-Key")
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
        .detail("the request may not have been stored; retry with the same Idempotency-Key")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = Body {
            kind: format!("/problems/{}", self.slug),
            title: self.title,
            status: self.status.as_u16(),
            detail: self.detail.as_deref(),
            errors: &self.errors,
            trace_id: lapor_shared::telemetry::current_trace_id(),
        };
        let mut resp = (self.status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}

/// Database failures: transient ones say "try again" (503), others are internal (500). The
/// cause goes to the log, scrubbed; the client gets no internals.
impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        let transient = lapor_shared::db::is_transient(&e);
        tracing::error!(error = %lapor_shared::privacy::scrub(&e.to_string()), transient, "database error");
        if transient {
            Problem::unavailable()
        } else {
            Problem::internal()
        }
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Self {
        if let Some(db) = e.downcast_ref::<sqlx::Error>()
            && lapor_shared::db::is_transient(db)
        {
            tracing::error!(error = %lapor_shared::privacy::scrub(&format!("{e:#}")), "database unavailable");
            return Problem::unavailable();
        }
        tracing::error!(error = %lapor_shared::privacy::scrub(&format!("{e:#}")), "internal error");
        Problem::internal()
    }
}
