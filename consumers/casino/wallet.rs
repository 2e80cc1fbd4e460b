//! The wallet: every call that moves money is one Postgres transaction, under the row locks of
//! the player's wallets, that writes the balance, the ledger entry, its outbox row and the
//! answer (kept by `externalTransactionId`) together or not at all.
//!
//! A money call is four round trips: `BEGIN`; one statement that claims its
//! `externalTransactionId` (a repeat gets the first answer's bytes, the same id with another
//! body 409; a concurrent repeat waits for the first to commit) and locks the player's wallets
//! (`FOR UPDATE`, in currency order); one that books (balance, ledger entry, outbox row,
//! answer) if the session and the absence of a tombstone still hold (it starts after the lock
//! is held, so a rollback's tombstone committed while we waited is seen); `COMMIT`. A refusal
//! reads every rule, in order, to say which.
//!
//! Answers that refuse (402 insufficient funds, 404 unknown user or session, 409 rolled back,
//! 422 wrong currency, not rollbackable) are kept like successes: the provider's retry gets
//! the same refusal.

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::integrations::casino::domain::{BalanceRequest, MoneyRequest, RollbackRequest};
use crate::integrations::casino::reply::Reply;
use crate::integrations::casino::subjects;
use crate::money::{Currency, format_major};

/// A debit or a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Debit,
    Credit,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Debit => "debit",
            Kind::Credit => "credit",
        }
    }
}

/// `getBalance`: nothing is written.
pub async fn balance(db: &PgPool, request: &BalanceRequest) -> sqlx::Result<Reply> {
    let wallets: Vec<(String, i64)> =
        sqlx::query_as("SELECT currency, balance FROM casino_wallets WHERE user_id = $1")
            .bind(&request.user_id)
            .fetch_all(db)
            .await?;
    Ok(answer_balance(&wallets, &request.user_id, request.currency, None))
}

fn answer_balance(
    wallets: &[(String, i64)],
    user_id: &str,
    currency: Currency,
    transaction_id: Option<Uuid>,
) -> Reply {
    if wallets.is_empty() {
        return unknown_user(user_id);
    }
    match wallets.iter().find(|(code, _)| code == currency.code()) {
        Some((_, balance)) => {
            let mut body = json!({
                "status": "ok",
                "balance": format_major(*balance, currency),
                "currency": currency.code(),
            });
            if let Some(id) = transaction_id {
                body["transactionId"] = json!(id.to_string());
            }
            Reply::json(200, &body)
        }
        None => wrong_currency(user_id, currency),
    }
}

fn unknown_user(user_id: &str) -> Reply {
    Reply::error(404, "unknown_user", format!("no player {user_id:?}"))
}

fn wrong_currency(user_id: &str, currency: Currency) -> Reply {
    Reply::error(
        422,
        "wrong_currency",
        format!("player {user_id:?} has no {currency} wallet"),
    )
}

/// A debit (bet) or credit (win) of `amount` minor units.
pub async fn money(
    db: &PgPool,
    kind: Kind,
    request: &MoneyRequest,
    amount: i64,
    fingerprint: &str,
) -> sqlx::Result<Reply> {
    let mut tx = db.begin().await?;
    let external_id = &request.external_transaction_id;
    let wallets = match claim_and_lock(&mut tx, external_id, kind.as_str(), fingerprint, &request.user_id).await? {
        Ok(wallets) => wallets,
        Err(first) => {
            tx.rollback().await?;
            return Ok(first);
        }
    };
    // The common case costs one more statement: the balance is checked here, the session and
    // a tombstone by the statement that books (it starts after the lock is held). Any refusal
    // reads every rule, in order, to say which.
    let balance = wallets
        .iter()
        .find(|(code, _)| code == request.currency.code())
        .map(|(_, balance)| *balance)
        .filter(|balance| kind == Kind::Credit || *balance >= amount);
    let booked = match balance {
        Some(balance) => {
            let signed = if kind == Kind::Debit { -amount } else { amount };
            let after = balance + signed;
            let id = Uuid::new_v4();
            let reply = Reply::json(
                200,
                &json!({
                    "status": "ok",
                    "balance": format_major(after, request.currency),
                    "currency": request.currency.code(),
                    "transactionId": id.to_string(),
                }),
            );
            let entry = Entry {
                transaction_id: id,
                user_id: &request.user_id,
                currency: request.currency,
                kind: kind.as_str(),
                amount: signed,
                balance_after: after,
                external_transaction_id: external_id,
                original_transaction_id: None,
                round_id: Some(&request.round_id),
                game_id: Some(&request.game_id),
                session_id: Some(&request.session_id),
            };
            let guard = Guard {
                session: Some(&request.session_id),
                no_tombstone: kind == Kind::Debit,
            };
            book(&mut tx, &entry, &reply, &guard).await?.then_some(reply)
        }
        None => None,
    };
    let reply = match booked {
        Some(reply) => reply,
        None => {
            let refusal = match money_rules(&mut tx, kind, request, amount, &wallets).await? {
                Err(refusal) => refusal,
                Ok(_) => Reply::error(409, "retry", "the wallet changed while this call ran: retry"),
            };
            record(&mut tx, external_id, &refusal).await?;
            refusal
        }
    };
    tx.commit().await?;
    Ok(reply)
}

/// The rules of a debit or credit, once the wallets are locked: the balance before, or the
/// refusal.
async fn money_rules(
    tx: &mut PgConnection,
    kind: Kind,
    request: &MoneyRequest,
    amount: i64,
    wallets: &[(String, i64)],
) -> sqlx::Result<Result<i64, Reply>> {
    if wallets.is_empty() {
        return Ok(Err(unknown_user(&request.user_id)));
    }
    let (session, tombstoned): (Option<String>, bool) = sqlx::query_as(
        "SELECT (SELECT currency FROM casino_sessions WHERE session_id = $1 AND user_id = $2),
                EXISTS (SELECT 1 FROM casino_tombstones WHERE external_transaction_id = $3)",
    )
    .bind(&request.session_id)
    .bind(&request.user_id)
    .bind(&request.external_transaction_id)
    .fetch_one(&mut *tx)
    .await?;
    let Some(session_currency) = session else {
        return Ok(Err(Reply::error(
            404,
            "unknown_session",
            format!(
                "no session {:?} of player {:?}",
                request.session_id, request.user_id
            ),
        )));
    };
    let currency = request.currency;
    let Some((_, balance)) = wallets.iter().find(|(code, _)| code == currency.code()) else {
        return Ok(Err(wrong_currency(&request.user_id, currency)));
    };
    if session_currency != currency.code() {
        return Ok(Err(Reply::error(
            422,
            "wrong_currency",
            format!("the session plays in {session_currency}, not {currency}"),
        )));
    }
    if kind == Kind::Debit && tombstoned {
        return Ok(Err(Reply::error(
            409,
            "transaction_rolled_back",
            "a rollback of this transaction came first: it is not booked",
        )));
    }
    if kind == Kind::Debit && *balance < amount {
        return Ok(Err(Reply::json(
            402,
            &json!({
                "error": "insufficient_funds",
                "balance": format_major(*balance, currency),
            }),
        )));
    }
    Ok(Ok(*balance))
}

/// A rollback of a debit: refunds it once; of an unknown transaction: a tombstone, so that
/// debit is refused if it comes later.
pub async fn rollback(
    db: &PgPool,
    request: &RollbackRequest,
    fingerprint: &str,
) -> sqlx::Result<Reply> {
    let mut tx = db.begin().await?;
    let claimed = claim_and_lock(
        &mut tx,
        &request.external_transaction_id,
        "rollback",
        fingerprint,
        &request.user_id,
    )
    .await?;
    let wallets = match claimed {
        Ok(wallets) => wallets,
        Err(first) => {
            tx.rollback().await?;
            return Ok(first);
        }
    };
    let (reply, booked) = if wallets.is_empty() {
        (unknown_user(&request.user_id), false)
    } else {
        rollback_locked(&mut tx, request, &wallets).await?
    };
    if !booked {
        record(&mut tx, &request.external_transaction_id, &reply).await?;
    }
    tx.commit().await?;
    Ok(reply)
}

/// The answer to a rollback once the wallets are locked, and whether it booked an entry
/// (which records the answer with it).
async fn rollback_locked(
    tx: &mut PgConnection,
    request: &RollbackRequest,
    wallets: &[(String, i64)],
) -> sqlx::Result<(Reply, bool)> {
    let original: Option<(String, String, String, i64, Option<Uuid>)> = sqlx::query_as(
        "SELECT l.kind, l.user_id, l.currency, l.amount,
                (SELECT r.transaction_id FROM casino_ledger r
                 WHERE r.kind = 'rollback' AND r.original_transaction_id = l.external_transaction_id)
         FROM casino_ledger l WHERE l.external_transaction_id = $1",
    )
    .bind(&request.original_transaction_id)
    .fetch_optional(&mut *tx)
    .await?;
    let ok = |currency: Currency, balance: i64, id: Uuid| {
        Reply::json(
            200,
            &json!({
                "status": "ok",
                "balance": format_major(balance, currency),
                "currency": currency.code(),
                "transactionId": id.to_string(),
            }),
        )
    };
    let Some((kind, owner, code, amount, refunded)) = original else {
        // Unknown: the debit may still come; it will be refused.
        sqlx::query(
            "INSERT INTO casino_tombstones (external_transaction_id, rollback_transaction_id, user_id)
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(&request.original_transaction_id)
        .bind(&request.external_transaction_id)
        .bind(&request.user_id)
        .execute(&mut *tx)
        .await?;
        // The balance of the player's first wallet (a rollback names no currency).
        let (code, balance) = &wallets[0];
        let currency = Currency::parse(code).map_err(|err| sqlx::Error::Decode(err.into()))?;
        return Ok((ok(currency, *balance, Uuid::new_v4()), false));
    };
    let currency = Currency::parse(&code).map_err(|err| sqlx::Error::Decode(err.into()))?;
    if kind != "debit" {
        return Ok((Reply::error(
            422,
            "not_rollbackable",
            format!("{:?} is a {kind}: only debits are rolled back", request.original_transaction_id),
        ), false));
    }
    if owner != request.user_id {
        return Ok((Reply::error(
            409,
            "transaction_of_another_player",
            format!("{:?} is not a transaction of player {:?}", request.original_transaction_id, request.user_id),
        ), false));
    }
    let balance = wallets
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, b)| *b)
        .unwrap_or_default();
    if let Some(id) = refunded {
        // Refunded before (by another rollback id): nothing moves again.
        return Ok((ok(currency, balance, id), false));
    }
    let refund = -amount;
    let id = Uuid::new_v4();
    let reply = ok(currency, balance + refund, id);
    let entry = Entry {
        transaction_id: id,
        user_id: &request.user_id,
        currency,
        kind: "rollback",
        amount: refund,
        balance_after: balance + refund,
        external_transaction_id: &request.external_transaction_id,
        original_transaction_id: Some(&request.original_transaction_id),
        round_id: Some(&request.round_id),
        game_id: None,
        session_id: None,
    };
    let unguarded = Guard {
        session: None,
        no_tombstone: false,
    };
    let booked = book(tx, &entry, &reply, &unguarded).await?;
    Ok((reply, booked))
}

/// Claims `external_id` for this call: `None` if it is new (the claim is this transaction's
/// until it ends), else the first call's answer, or 409 if that call had another body.
async fn claim(
    tx: &mut PgConnection,
    external_id: &str,
    kind: &str,
    fingerprint: &str,
) -> sqlx::Result<Option<Reply>> {
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO casino_requests (external_transaction_id, kind, fingerprint, status, body)
         VALUES ($1, $2, $3, 0, '') ON CONFLICT DO NOTHING RETURNING 1",
    )
    .bind(external_id)
    .bind(kind)
    .bind(fingerprint)
    .fetch_optional(&mut *tx)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let (first_kind, first_fingerprint, status, body): (String, String, i16, String) =
        sqlx::query_as(
            "SELECT kind, fingerprint, status, body FROM casino_requests
             WHERE external_transaction_id = $1",
        )
        .bind(external_id)
        .fetch_one(&mut *tx)
        .await?;
    Ok(Some(if first_kind == kind && first_fingerprint == fingerprint {
        Reply::new(u16::try_from(status).unwrap_or(500), body)
    } else {
        Reply::error(
            409,
            "idempotency_conflict",
            format!("externalTransactionId {external_id:?} was used for another {first_kind} call"),
        )
    }))
}

/// [`claim`] and the lock of every wallet of the player (in currency order) in one statement: the player's wallets (locked), or the
/// first call's answer if this id was claimed before.
async fn claim_and_lock(
    tx: &mut PgConnection,
    external_id: &str,
    kind: &str,
    fingerprint: &str,
    user_id: &str,
) -> sqlx::Result<Result<Vec<(String, i64)>, Reply>> {
    let (claimed, wallets): (bool, sqlx::types::Json<Vec<(String, i64)>>) = sqlx::query_as(
        "WITH claim AS (
           INSERT INTO casino_requests (external_transaction_id, kind, fingerprint, status, body)
           VALUES ($1, $2, $3, 0, '') ON CONFLICT DO NOTHING RETURNING 1
         ), locked AS (
           -- Only once the id is ours: a repeat waits on the first call's claim and never
           -- holds the wallets the first call needs (no deadlock between them).
           SELECT currency, balance FROM casino_wallets
           WHERE user_id = $4 AND EXISTS (SELECT 1 FROM claim)
           ORDER BY currency FOR UPDATE
         )
         SELECT EXISTS (SELECT 1 FROM claim),
                (SELECT COALESCE(json_agg(json_build_array(currency, balance) ORDER BY currency),
                                 '[]') FROM locked)",
    )
    .bind(external_id)
    .bind(kind)
    .bind(fingerprint)
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    if claimed {
        return Ok(Ok(wallets.0));
    }
    // A repeat: its first answer (claim reads it; the claim itself is a no-op now).
    Ok(Err(claim(tx, external_id, kind, fingerprint)
        .await?
        .unwrap_or_else(|| Reply::error(409, "retry", "the first call of this id was undone: retry"))))
}

/// Keeps a refusal as the answer to its id.
async fn record(tx: &mut PgConnection, external_id: &str, reply: &Reply) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE casino_requests SET status = $2, body = $3 WHERE external_transaction_id = $1",
    )
    .bind(external_id)
    .bind(i16::try_from(reply.status).unwrap_or(500))
    .bind(std::str::from_utf8(&reply.body).unwrap_or_default())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// One ledger entry.
pub struct Entry<'a> {
    pub transaction_id: Uuid,
    pub user_id: &'a str,
    pub currency: Currency,
    pub kind: &'static str,
    /// Signed minor units: a debit is negative.
    pub amount: i64,
    pub balance_after: i64,
    pub external_transaction_id: &'a str,
    pub original_transaction_id: Option<&'a str>,
    pub round_id: Option<&'a str>,
    pub game_id: Option<&'a str>,
    pub session_id: Option<&'a str>,
}

/// What must still hold when the entry is booked (read by the booking statement, which starts
/// after the wallets' lock is held).
struct Guard<'a> {
    /// The player's session in the entry's currency.
    session: Option<&'a str>,
    /// No rollback of this id came first.
    no_tombstone: bool,
}

/// The balance, the ledger entry, its outbox row and the answer, in one statement, if `guard`
/// holds: whether it booked.
async fn book(
    tx: &mut PgConnection,
    entry: &Entry<'_>,
    reply: &Reply,
    guard: &Guard<'_>,
) -> sqlx::Result<bool> {
    let booked: i64 = sqlx::query_scalar(
        "WITH ok AS (
           SELECT 1 WHERE ($15::text IS NULL OR EXISTS (
                             SELECT 1 FROM casino_sessions
                             WHERE session_id = $15 AND user_id = $2 AND currency = $3))
                      AND NOT ($16 AND EXISTS (
                             SELECT 1 FROM casino_tombstones WHERE external_transaction_id = $7))
         ), wallet AS (
           UPDATE casino_wallets SET balance = $6, updated_at = now()
           WHERE user_id = $2 AND currency = $3 AND EXISTS (SELECT 1 FROM ok)
           RETURNING 1
         ), entry AS (
           INSERT INTO casino_ledger (transaction_id, user_id, currency, kind, amount,
               balance_after, external_transaction_id, original_transaction_id, round_id,
               game_id, session_id)
           SELECT $1::uuid, $2::text, $3::text, $4::text, $5::bigint, $6::bigint, $7::text,
                  $8::text, $9::text, $10::text, $11::text
           FROM wallet
           RETURNING id, created_at
         ), outbox AS (
           INSERT INTO casino_outbox (ledger_id, subject, payload)
           SELECT id, $12, jsonb_build_object(
               'id', id, 'transactionId', $1::uuid, 'userId', $2::text, 'currency', $3::text,
               'kind', $4::text, 'amount', $5::bigint, 'balanceAfter', $6::bigint,
               'externalTransactionId', $7::text, 'originalTransactionId', $8::text,
               'roundId', $9::text, 'gameId', $10::text, 'sessionId', $11::text,
               'createdAt', created_at)
           FROM entry
         ), answer AS (
           UPDATE casino_requests SET status = $13, body = $14
           WHERE external_transaction_id = $7 AND EXISTS (SELECT 1 FROM entry)
           RETURNING 1
         )
         SELECT count(*) FROM answer",
    )
    .bind(entry.transaction_id)
    .bind(entry.user_id)
    .bind(entry.currency.code())
    .bind(entry.kind)
    .bind(entry.amount)
    .bind(entry.balance_after)
    .bind(entry.external_transaction_id)
    .bind(entry.original_transaction_id)
    .bind(entry.round_id)
    .bind(entry.game_id)
    .bind(entry.session_id)
    .bind(subjects::ledger(entry.kind))
    .bind(i16::try_from(reply.status).unwrap_or(500))
    .bind(std::str::from_utf8(&reply.body).unwrap_or_default())
    .bind(guard.session)
    .bind(guard.no_tombstone)
    .fetch_one(&mut *tx)
    .await?;
    Ok(booked == 1)
}
