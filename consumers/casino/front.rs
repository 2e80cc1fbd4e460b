//! The casino front end's calls, run by the wallet service: `launchGame` opens a session and
//! tells the provider; `simulateRound` launches, then asks the provider to play the seed's
//! scripted round against the wallet, and answers every step.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::integrations::casino::config::ProviderConfig;
use crate::integrations::casino::domain::LaunchRequest;
use crate::integrations::casino::reply::Reply;
use crate::integrations::casino::signature::{PROVIDER_HEADER, sign};
use crate::http_client::{self, Verdict};
use crate::runtime::service::Context;

/// Launches (and with `simulate`, plays a round).
pub async fn run(
    ctx: &Context,
    cfg: &ProviderConfig,
    request: &LaunchRequest,
    simulate: bool,
) -> anyhow::Result<Reply> {
    let wallets: Vec<String> =
        sqlx::query_scalar("SELECT currency FROM casino_wallets WHERE user_id = $1")
            .bind(&request.user_id)
            .fetch_all(&ctx.db)
            .await?;
    if wallets.is_empty() {
        return Ok(Reply::error(404, "unknown_user", format!("no player {:?}", request.user_id)));
    }
    if !wallets.iter().any(|c| c == request.currency.code()) {
        return Ok(Reply::error(
            422,
            "wrong_currency",
            format!("player {:?} has no {} wallet", request.user_id, request.currency),
        ));
    }
    let session_id = Uuid::new_v4().to_string();
    // The session exists before the provider hears of it: its first call may come at once.
    sqlx::query(
        "INSERT INTO casino_sessions (session_id, user_id, game_id, currency) VALUES ($1, $2, $3, $4)",
    )
    .bind(&session_id)
    .bind(&request.user_id)
    .bind(&request.game_id)
    .bind(request.currency.code())
    .execute(&ctx.db)
    .await?;
    let body = json!({
        "sessionId": session_id,
        "userId": request.user_id,
        "gameId": request.game_id,
        "currency": request.currency.code(),
    });
    let launched = match call(ctx, cfg, "/provider/launch", &body).await {
        Ok(answer) => answer,
        Err(refusal) => return Ok(refusal),
    };
    let launch_url = launched
        .get("launchUrl")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    sqlx::query("UPDATE casino_sessions SET launch_url = $2 WHERE session_id = $1")
        .bind(&session_id)
        .bind(&launch_url)
        .execute(&ctx.db)
        .await?;
    let mut answer = json!({"sessionId": session_id, "launchUrl": launch_url});
    if simulate {
        let round = match call(ctx, cfg, "/provider/simulate", &body).await {
            Ok(round) => round,
            Err(refusal) => return Ok(refusal),
        };
        if let (Some(answer), Some(round)) = (answer.as_object_mut(), round.as_object()) {
            answer.extend(round.clone());
        }
    }
    Ok(Reply::json(200, &answer))
}

/// A signed call to the provider, within `PROVIDER_TIMEOUT_MS`: its JSON answer, or the 502
/// to give the front end.
async fn call(
    ctx: &Context,
    cfg: &ProviderConfig,
    path: &str,
    body: &Value,
) -> anyhow::Result<Value, Reply> {
    let raw = body.to_string();
    let request = ctx
        .http
        .post(format!("{}{path}", cfg.provider_url))
        .timeout(cfg.provider_timeout)
        .header("content-type", "application/json")
        .header(PROVIDER_HEADER, sign(&cfg.provider_secret, raw.as_bytes()))
        .body(raw);
    // The shared partner call: its span, the trace context and the partner metrics.
    let response = http_client::send("provider", request).await;
    let Some(status) = response.status else {
        let why = response.error.unwrap_or_default();
        return Err(Reply::json(
            502,
            &json!({"error": "provider_unavailable", "message": format!("the provider did not answer {path}: {why}")}),
        ));
    };
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    if response.verdict() != Verdict::Success {
        let mut refusal = json!({
            "error": "provider_refused",
            "message": format!("the provider answered {path} with {status}"),
        });
        if !answer.is_null() {
            refusal["provider"] = answer;
        }
        return Err(Reply::json(502, &refusal));
    }
    Ok(answer)
}
