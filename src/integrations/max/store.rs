//! MAX's rows: the writes (`max_operations`) and the conversations (`max_conversations`).

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::operations::Operation;

/// A write's state once its adapter call ended (`pending` until then).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Refused,
    Failed,
}

impl Ended {
    fn as_str(self) -> &'static str {
        match self {
            Ended::Succeeded => "succeeded",
            Ended::Refused => "refused",
            Ended::Failed => "failed",
        }
    }
}

/// What MAX is answered about an operation: `{operation_id, operation, state}` and, once it
/// ended, the status and body it was (or would have been) answered.
#[derive(Clone, Debug)]
pub struct Row {
    pub state: String,
    pub status_code: Option<i32>,
    pub answer: Option<Value>,
}

/// Records `id` as pending unless it is there; what is there.
pub async fn begin(db: &PgPool, id: Uuid, operation: &Operation, conversation_id: Option<&str>) -> sqlx::Result<Row> {
    sqlx::query(
        "INSERT INTO max_operations (id, operation, adapter, state, conversation_id)
         VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(operation.name())
    .bind(operation.adapter().name())
    .bind(conversation_id)
    .execute(db)
    .await?;
    Ok(find(db, id).await?.expect("the row was just written"))
}

pub async fn find(db: &PgPool, id: Uuid) -> sqlx::Result<Option<Row>> {
    let row: Option<(String, Option<i32>, Option<Value>)> =
        sqlx::query_as("SELECT state, status_code, answer FROM max_operations WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(state, status_code, answer)| Row {
        state,
        status_code,
        answer,
    }))
}

pub async fn end(
    db: &PgPool,
    id: Uuid,
    ended: Ended,
    status: u16,
    answer: &Value,
    error: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE max_operations
         SET state = $2, status_code = $3, answer = $4, error = $5, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(ended.as_str())
    .bind(i32::from(status))
    .bind(answer)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

/// Registers (or updates) a conversation.
pub async fn put_conversation(db: &PgPool, id: &str, assigned_to: &str, metadata: &Value) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO max_conversations (id, assigned_to, metadata) VALUES ($1, $2, $3)
         ON CONFLICT (id) DO UPDATE
         SET assigned_to = EXCLUDED.assigned_to, metadata = EXCLUDED.metadata, updated_at = now()",
    )
    .bind(id)
    .bind(assigned_to)
    .bind(metadata)
    .execute(db)
    .await?;
    Ok(())
}

/// The conversations whose metadata names transaction `id`: (conversation id, agent).
pub async fn conversations_about(db: &PgPool, transaction_id: &str) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT id, assigned_to FROM max_conversations
         WHERE metadata ->> 'transaction_id' = $1 ORDER BY id",
    )
    .bind(transaction_id)
    .fetch_all(db)
    .await
}
