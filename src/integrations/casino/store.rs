//! The casino's reads and seed data (the wallet's writes are in [`super::wallet`]).

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use super::domain::Player;
use super::subjects;
use crate::money::{Currency, format_major, parse_major};

/// A player's ledger entries, newest first (amounts in major units of their currency).
pub async fn ledger(db: &PgPool, user_id: &str, limit: i64) -> sqlx::Result<Vec<Value>> {
    type Row = (
        i64,
        Uuid,
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<String>,
        Option<String>,
        chrono::DateTime<chrono::Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, transaction_id, currency, kind, amount, balance_after,
                external_transaction_id, original_transaction_id, round_id, created_at
         FROM casino_ledger WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, tx, code, kind, amount, after, external, original, round, at)| {
            let major = |minor: i64| match Currency::parse(&code) {
                Ok(currency) => json!(format_major(minor, currency)),
                Err(_) => json!(minor),
            };
            json!({
                "id": id,
                "transactionId": tx.to_string(),
                "currency": code,
                "kind": kind,
                "amount": major(amount),
                "balanceAfter": major(after),
                "externalTransactionId": external,
                "originalTransactionId": original,
                "roundId": round,
                "createdAt": at,
            })
        })
        .collect())
}

/// Balance against ledger over every wallet: how many wallets there are, how many disagree,
/// and up to `limit` of them (those that disagree first), each with its balance, the sum of
/// its entries and whether they agree.
pub async fn reconciliation(db: &PgPool, limit: i64) -> sqlx::Result<Value> {
    let rows: Vec<(String, String, i64, i64, i64, i64)> = sqlx::query_as(
        "WITH sums AS (
           SELECT w.user_id, w.currency, w.balance,
                  COALESCE((SELECT sum(l.amount) FROM casino_ledger l
                            WHERE l.user_id = w.user_id AND l.currency = w.currency), 0)::bigint AS ledger
           FROM casino_wallets w
         )
         SELECT user_id, currency, balance, ledger,
                count(*) OVER ()::bigint,
                count(*) FILTER (WHERE balance <> ledger) OVER ()::bigint
         FROM sums
         ORDER BY balance = ledger, user_id, currency
         LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?;
    let (wallets, mismatched) = rows.first().map_or((0, 0), |r| (r.4, r.5));
    let listed: Vec<Value> = rows
        .into_iter()
        .map(|(user, code, balance, sum, _, _)| {
            json!({
                "userId": user,
                "currency": code,
                "balanceMinor": balance,
                "ledgerSumMinor": sum,
                "matches": balance == sum,
            })
        })
        .collect();
    Ok(json!({"wallets": wallets, "mismatched": mismatched, "listed": listed}))
}

/// Adds the players of `CASINO_PLAYERS_JSON` that have no wallet in a currency yet, each
/// opening balance a `seed` ledger entry (so balance = sum of entries holds from the start).
/// Existing wallets are left alone. Returns `user:currency` of each wallet created.
pub async fn seed_players(db: &PgPool, json: &str) -> anyhow::Result<Vec<String>> {
    let players: Vec<Player> = serde_json::from_str(json).map_err(|err| {
        anyhow::anyhow!(
            "CASINO_PLAYERS_JSON is not a list of {{\"userId\", \"balances\": {{\"USD\": \"100.00\"}}}}: {err}"
        )
    })?;
    let mut created = Vec::new();
    let mut tx = db.begin().await?;
    for player in &players {
        for (code, amount) in &player.balances {
            let currency = Currency::parse(code).map_err(|err| anyhow::anyhow!("CASINO_PLAYERS_JSON: {err}"))?;
            let minor = parse_major(amount, currency)
                .map_err(|err| anyhow::anyhow!("CASINO_PLAYERS_JSON: {err}"))?;
            anyhow::ensure!(minor >= 0, "CASINO_PLAYERS_JSON: a balance cannot be negative");
            let inserted = sqlx::query(
                "WITH wallet AS (
                   INSERT INTO casino_wallets (user_id, currency, balance) VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING RETURNING user_id
                 ), entry AS (
                   INSERT INTO casino_ledger (transaction_id, user_id, currency, kind, amount,
                       balance_after)
                   SELECT $4, $1, $2, 'seed', $3, $3 FROM wallet
                   RETURNING id, created_at
                 )
                 INSERT INTO casino_outbox (ledger_id, subject, payload)
                 SELECT id, $5, jsonb_build_object('id', id, 'transactionId', $4::uuid,
                     'userId', $1::text, 'currency', $2::text, 'kind', 'seed',
                     'amount', $3::bigint, 'balanceAfter', $3::bigint, 'createdAt', created_at)
                 FROM entry",
            )
            .bind(&player.user_id)
            .bind(currency.code())
            .bind(minor)
            .bind(Uuid::new_v4())
            .bind(subjects::ledger("seed"))
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() > 0 {
                created.push(format!("{}:{}", player.user_id, currency.code()));
            }
        }
    }
    tx.commit().await?;
    Ok(created)
}
