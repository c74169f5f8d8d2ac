//! Officers authenticate with a bearer token from configuration
//! (`LAPOR__REVIEW__OFFICERS__<NAME>`). Tokens are compared in constant time; failures say
//! nothing about which part was wrong.

use crate::problem::Problem;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use lapor_shared::config::ReviewSettings;

pub struct Officer(pub String);

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub struct Unauthorised;

impl IntoResponse for Unauthorised {
    fn into_response(self) -> Response {
        let mut r = Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorised",
            "An officer's bearer token is required",
        )
        .detail("send Authorization: Bearer <token>")
        .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"lapor-review\""),
        );
        r
    }
}

pub fn officer(headers: &HeaderMap, review: &ReviewSettings) -> Result<Officer, Unauthorised> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(Unauthorised)?;
    // Check every officer so the time taken does not depend on which one matched.
    let mut found = None;
    for (name, secret) in &review.officers {
        if same(secret.expose().as_bytes(), token.as_bytes()) {
            found = Some(name.clone());
        }
    }
    found.map(Officer).ok_or(Unauthorised)
}
