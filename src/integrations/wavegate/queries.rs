//! What partners and operators read back: `GET /orders` and `GET /orders/{id}` (the calling
//! partner's orders, same credentials as `POST /orders`), `GET /admin/orders` (blocked and
//! stuck orders of every partner, behind `ADMIN_TOKEN`).

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::{Caller, authenticate};
use super::config::ADMIN_TOKEN;
use super::domain::{PartnerId, PipelineStatus};
use super::state::State as WaveGateState;
use super::store::{self, AdminFilter};
use crate::ingress::{self, ApiError, Parent};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    /// Cursor: the `next_before` of the previous page.
    before: Option<Uuid>,
}

/// The calling partner's orders, newest first, `limit` (default 20, at most 100) a page.
pub async fn list(
    State(app): State<WaveGateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/orders", partner_id);
    ingress::respond(span, Parent::Caller(&headers), async {
        let caller = Caller::new(&app, peer, &headers, Method::GET);
        let partner = authenticate(&app, &caller, &headers).await?;
        let query = ingress::query(query)?;
        let limit = query.limit.unwrap_or(20).clamp(1, 100);
        let mut orders = store::partner_orders(&app.hub.db, &partner, query.before, limit + 1)
            .await
            .map_err(ApiError::database)?;
        let next_before = (orders.len() as i64 > limit).then(|| {
            orders.truncate(limit as usize);
            orders.last().map(|o| o.id)
        });
        Ok(Json(json!({"orders": orders, "next_before": next_before.flatten()})).into_response())
    })
    .await
}

/// One of the calling partner's orders with its items, tickets and jobs (404 for anyone else's).
pub async fn show(
    State(app): State<WaveGateState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let span = crate::server_span!("GET", "/orders/{id}", partner_id);
    ingress::respond(span, Parent::Caller(&headers), async {
        let caller = Caller::new(&app, peer, &headers, Method::GET);
        let partner = authenticate(&app, &caller, &headers).await?;
        let not_found = || ApiError::not_found(format!("no order {id} for partner {partner}"));
        let order_id: Uuid = id.parse().map_err(|_| not_found())?;
        let detail = store::order_detail(&app.hub.db, order_id, Some(partner.as_str()))
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(not_found)?;
        Ok(Json(detail).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub struct AdminQuery {
    /// Comma-separated pipeline statuses.
    status: Option<String>,
    partner_id: Option<String>,
    /// Created at or after (RFC 3339).
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only orders still in flight that have not moved for this many seconds.
    stuck_secs: Option<u64>,
    limit: Option<i64>,
}

/// The statuses of `?status=a,b`, or which one is unknown.
fn statuses(raw: &str) -> Result<Vec<&'static str>, ApiError> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            PipelineStatus::parse(s).map(|s| s.as_str()).ok_or_else(|| {
                ApiError::bad_request("invalid_query", format!("unknown status {s:?}"))
                    .with_details(
                        PipelineStatus::ALL
                            .iter()
                            .map(|s| s.as_str().to_string())
                            .collect(),
                    )
            })
        })
        .collect()
}

/// The longest `stuck_secs` asked for: ten years (a longer one is a typo, and overflows the
/// database's timestamps near its limit).
const MAX_STUCK_SECS: u64 = 10 * 366 * 24 * 3600;

fn stuck_secs(secs: u64) -> Result<u64, ApiError> {
    if secs > MAX_STUCK_SECS {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("stuck_secs must be at most {MAX_STUCK_SECS} (ten years), not {secs}"),
        ));
    }
    Ok(secs)
}

/// `since` within the years a timestamp column holds and an order could have been made.
fn since(at: chrono::DateTime<chrono::Utc>) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    use chrono::Datelike;
    if !(1970..=9999).contains(&at.year()) {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("since must be between 1970 and 9999, not {at}"),
        ));
    }
    Ok(at)
}

/// `GET /admin/orders?status=&partner_id=&since=&stuck_secs=` behind `ADMIN_TOKEN`.
pub async fn admin_list(
    State(app): State<WaveGateState>,
    headers: HeaderMap,
    query: Result<Query<AdminQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/admin/orders");
    ingress::respond(span, Parent::Caller(&headers), async {
        ingress::bearer(&headers, &app.admin_token, ADMIN_TOKEN.name)?;
        let query = ingress::query(query)?;
        let filter = AdminFilter {
            statuses: query.status.as_deref().map(statuses).transpose()?,
            partner_id: query
                .partner_id
                .map(|raw| {
                    PartnerId::parse(&raw)
                        .map(|id| id.as_str().to_string())
                        .map_err(|why| ApiError::bad_request("invalid_query", format!("partner_id: {why}")))
                })
                .transpose()?,
            since: query.since.map(since).transpose()?,
            stuck_secs: query.stuck_secs.map(stuck_secs).transpose()?,
            limit: query.limit.unwrap_or(100).clamp(1, 500),
        };
        let orders = store::admin_orders(&app.hub.db, filter)
            .await
            .map_err(ApiError::database)?;
        Ok(Json(json!({ "orders": orders })).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_filters_are_refused_before_the_database() {
        assert_eq!(stuck_secs(3600).unwrap(), 3600);
        assert_eq!(stuck_secs(MAX_STUCK_SECS).unwrap(), MAX_STUCK_SECS);
        let refused = stuck_secs(9_223_372_036_854_775_807).unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(refused.message.contains("stuck_secs"), "{}", refused.message);
        let ancient: chrono::DateTime<chrono::Utc> = "-100000-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(since(ancient).unwrap_err().code, "invalid_query");
    }

    #[test]
    fn status_filters_name_what_is_unknown() {
        assert_eq!(
            statuses("ticketing_blocked, ota_callback_blocked,").unwrap(),
            ["ticketing_blocked", "ota_callback_blocked"]
        );
        let refused = statuses("ticketed,lost").unwrap_err();
        assert!(refused.message.contains("\"lost\""), "{}", refused.message);
        assert_eq!(refused.details.len(), PipelineStatus::ALL.len());
    }
}
