//! The operator audit trail (`ops_audit`): one row per action, applied or refused.

use super::{Ctx, StoreError, Tx, truncate};
use crate::domain::{OrderId, SagaVersion};

/// One audit row.
#[allow(clippy::too_many_arguments)]
pub async fn audit(
    tx: &mut Tx,
    order_id: Option<OrderId>,
    action: &str,
    params: &serde_json::Value,
    actor: &str,
    reason: &str,
    version_before: Option<SagaVersion>,
    version_after: Option<SagaVersion>,
    result: &str,
    detail: Option<&str>,
    job_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO ops_audit (order_id, action, params, actor, reason, version_before, version_after, result, detail, job_id, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(order_id)
    .bind(action)
    .bind(params.to_string())
    .bind(truncate(actor, 128))
    .bind(truncate(reason, 1000))
    .bind(version_before)
    .bind(version_after)
    .bind(result)
    .bind(detail.map(|d| truncate(d, 4000)))
    .bind(job_id)
    .bind(crate::store::now())
    .execute(&mut **tx)
    .await
    .ctx("writing the audit row")?;
    Ok(())
}

/// How many times `action` was applied to the saga of `order_id` (the next
/// `retry_step` is numbered one more: its outbox event id stays unique).
pub async fn count_applied(tx: &mut Tx, order_id: OrderId, action: &str) -> Result<u32, StoreError> {
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM ops_audit WHERE order_id = ? AND action = ? AND result = 'applied'")
            .bind(order_id)
            .bind(action)
            .fetch_one(&mut **tx)
            .await
            .ctx("counting earlier retries")?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}
