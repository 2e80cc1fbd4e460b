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
use super::domain::PipelineStatus;
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
    Query(query): Query<ListQuery>,
) -> Response {
    let span = crate::server_span!("GET", "/orders", partner_id);
    ingress::respond(span, Parent::Caller(&headers), async {
        let caller = Caller::new(&app, peer, &headers, Method::GET);
        let partner = authenticate(&app, &caller, &headers).await?;
        let limit = query.limit.unwrap_or(20).clamp(1, 100);
        let mut orders = store::partner_orders(&app.hub.db, &partner, query.before, limit + 1)
            .await
            .map_err(|err| ApiError::unavailable(err.into()))?;
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

/// `GET /admin/orders?status=&partner_id=&since=&stuck_secs=` behind `ADMIN_TOKEN`.
pub async fn admin_list(
    State(app): State<WaveGateState>,
    headers: HeaderMap,
    query: Result<Query<AdminQuery>, QueryRejection>,
) -> Response {
    let span = crate::server_span!("GET", "/admin/orders");
    ingress::respond(span, Parent::Caller(&headers), async {
        ingress::bearer(&headers, &app.admin_token, ADMIN_TOKEN.name)?;
        let Query(query) =
            query.map_err(|err| ApiError::bad_request("invalid_query", err.body_text()))?;
        let filter = AdminFilter {
            statuses: query.status.as_deref().map(statuses).transpose()?,
            partner_id: query.partner_id,
            since: query.since,
            stuck_secs: query.stuck_secs,
            limit: query.limit.unwrap_or(100).clamp(1, 500),
        };
        let orders = store::admin_orders(&app.hub.db, filter)
            .await
            .map_err(|err| ApiError::unavailable(err.into()))?;
        Ok(Json(json!({ "orders": orders })).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

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
