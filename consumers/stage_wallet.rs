//! `stage-wallet` (INBOUND, `in.wallet.>`): records each accepted debit or credit and commands
//! the operator call; records the operator's callbacks.

use async_nats::HeaderMap;
use bytes::Bytes;

use super::Deps;
use crate::domain::format_major;
use crate::domain::wallet::{OperatorCallback, OperatorCommand, Requested};
use crate::nats::headers;
use crate::runtime::{Delivery, Failure, Stage, StageResult};

pub struct StageWallet {
    deps: Deps,
}

impl StageWallet {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    async fn requested(&self, delivery: &Delivery) -> StageResult {
        let event: Requested = delivery.json()?;
        // The pending row shows the transaction in flight. It is committed asynchronously (no
        // wait for the WAL flush, off the path to the operator): the outcome write inserts the
        // whole row anyway, so losing this one in a crash loses nothing. A redelivery finds the
        // row and changes nothing; the command is published again and the stream drops the
        // duplicate by its id, so a crash between the two loses nothing either.
        sqlx::query(
            "INSERT INTO wallet_transactions
                 (id, kind, player_id, amount_minor, currency, round_id, game_id, trace_id)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(event.transaction_id)
        .bind(event.kind.as_str())
        .bind(event.player_id.as_str())
        .bind(event.amount.minor())
        .bind(event.currency.code())
        .bind(&event.round_id)
        .bind(&event.game_id)
        .bind(crate::telemetry::current_trace_id())
        .execute(&self.deps.db)
        .await?;

        let command = OperatorCommand {
            transaction_id: event.transaction_id,
            kind: event.kind,
            operator_amount: format_major(event.amount.minor(), event.currency),
            player_id: event.player_id,
            amount: event.amount,
            currency: event.currency,
            round_id: event.round_id,
            game_id: event.game_id,
        };
        let mut forward = HeaderMap::new();
        for name in [headers::IDEMPOTENCY_KEY, headers::FINGERPRINT] {
            if let Some(value) = delivery.header(name) {
                forward.insert(name, value);
            }
        }
        self.deps
            .bus
            .publish(
                &format!("out.operator.{}", command.kind.operator_operation()),
                Some(&format!("operator:{}", command.transaction_id)),
                forward,
                Bytes::from(serde_json::to_vec(&command).map_err(Failure::permanent)?),
            )
            .await?;
        Ok(())
    }

    async fn operator_callback(&self, delivery: &Delivery) -> StageResult {
        let callback: OperatorCallback = delivery.json()?;
        sqlx::query(
            "INSERT INTO operator_callbacks (operator_transaction_id, event, transaction_id, payload)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (operator_transaction_id, event) DO NOTHING",
        )
        .bind(&callback.transaction_id)
        .bind(&callback.event)
        .bind(&callback.external_transaction_id)
        .bind(sqlx::types::Json(&callback))
        .execute(&self.deps.db)
        .await?;
        Ok(())
    }
}

impl Stage for StageWallet {
    async fn handle(&self, delivery: &Delivery) -> StageResult {
        match delivery.subject() {
            "in.wallet.debit" | "in.wallet.credit" => self.requested(delivery).await,
            "in.wallet.operator_callback" => self.operator_callback(delivery).await,
            other => Err(Failure::permanent(format!(
                "stage-wallet has no handler for {other}"
            ))),
        }
    }
}
