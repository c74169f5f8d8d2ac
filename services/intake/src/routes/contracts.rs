//! The published contracts, served so that clients and unit developers always read the
//! version the running intake implements: `/v1/openapi.yaml`, `/v1/asyncapi.yaml` and the
//! JSON Schemas they reference (`/v1/schemas/...`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

pub const OPENAPI: &str = include_str!("../../../../docs/contracts/openapi.yaml");
pub const ASYNCAPI: &str = include_str!("../../../../docs/contracts/asyncapi.yaml");

macro_rules! schemas {
    ($($path:literal),+ $(,)?) => {
        &[$(($path, include_str!(concat!("../../../../docs/contracts/schemas/", $path)))),+]
    };
}

pub const SCHEMAS: &[(&str, &str)] = schemas!(
    "common.schema.json",
    "case_event.v1.schema.json",
    "batch.v1.schema.json",
    "unit_case.v1.schema.json",
    "unit_reply.v1.schema.json",
    "unit_sla.v1.schema.json",
    "followup.v1.schema.json",
    "http/accepted.schema.json",
    "http/complaint.v1.schema.json",
    "http/decision.v1.schema.json",
    "http/problem.schema.json",
    "http/reply.v1.schema.json",
    "http/reviews.v1.schema.json",
    "http/status.v1.schema.json",
    "http/supplement.v1.schema.json",
);

fn yaml(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], body).into_response()
}

pub async fn openapi() -> Response {
    yaml(OPENAPI)
}

pub async fn asyncapi() -> Response {
    yaml(ASYNCAPI)
}

pub async fn schema(Path(path): Path<String>) -> Response {
    match SCHEMAS.iter().find(|(p, _)| *p == path) {
        Some((_, body)) => {
            ([(header::CONTENT_TYPE, "application/schema+json")], *body).into_response()
        }
        None => crate::problem::Problem::new(StatusCode::NOT_FOUND, "not-found", "No such schema")
            .into_response(),
    }
}
