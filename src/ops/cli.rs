//! `order-saga ops …`: the ops surface from a shell. Talks to the database
//! directly (it works while the daemon is down); prints JSON.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::{Action, BulkRequest, JobEnd, Ops, OpsError, Request};
use crate::domain::{OrderId, SagaVersion};
use crate::store::inspect::{self, SagaFilter, SagaKeyset};

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// Operator commands.
#[derive(Debug, Clone, Args)]
pub struct OpsArgs {
    #[command(subcommand)]
    pub command: OpsCommand,
}

/// Which sagas (list and bulk).
#[derive(Debug, Clone, Args, Default, serde::Serialize)]
pub struct FilterArgs {
    /// Only orders of this customer (terminal sagas included).
    #[arg(long)]
    pub customer: Option<String>,
    /// Only this state.
    #[arg(long)]
    pub state: Option<String>,
    /// At least this long in the current state, e.g. 15m.
    #[arg(long, value_parser = duration)]
    pub older_than: Option<Duration>,
    /// Only this tenant region.
    #[arg(long)]
    pub region: Option<String>,
    /// Only sagas started on this definition version.
    #[arg(long)]
    pub definition_version: Option<u32>,
    /// Only quarantined sagas.
    #[arg(long)]
    pub quarantined: bool,
    /// Only sagas that overstay their state's max_dwell.
    #[arg(long)]
    pub stuck: bool,
    /// Include sagas in terminal states.
    #[arg(long)]
    pub terminal: bool,
    /// Only sagas with a timer more than 30s past due.
    #[arg(long)]
    pub timers_overdue: bool,
    /// Only sagas with outbox rows not yet published.
    #[arg(long)]
    pub unpublished: bool,
    /// Only sagas with an event dead-lettered within this long, e.g. 1h.
    #[arg(long, value_parser = duration)]
    pub dead_lettered_within: Option<Duration>,
}

impl FilterArgs {
    fn filter(&self) -> SagaFilter {
        SagaFilter {
            order_id: None,
            customer_id: self.customer.clone(),
            state: self.state.clone(),
            older_than: self.older_than,
            tenant_region: self.region.clone(),
            definition_version: self.definition_version,
            quarantined: self.quarantined.then_some(true),
            stuck: self.stuck,
            include_terminal: self.terminal,
            timers_overdue: self.timers_overdue,
            unpublished: self.unpublished,
            dead_lettered_within: self.dead_lettered_within,
        }
    }
}

/// Who acts and why (every action).
#[derive(Debug, Clone, Args)]
pub struct ActorArgs {
    /// Who acts, e.g. ops:alice.
    #[arg(long)]
    pub actor: String,
    /// Why (kept in the audit trail).
    #[arg(long)]
    pub reason: String,
    /// Show what would happen without doing it.
    #[arg(long)]
    pub dry_run: bool,
}

/// One saga, at the version the operator looked at.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The order id.
    pub order_id: OrderId,
    /// The saga version you looked at (`ops show` prints it); refused if it moved on.
    #[arg(long)]
    pub expected_version: SagaVersion,
    #[command(flatten)]
    pub who: ActorArgs,
}

#[derive(Debug, Clone, Subcommand)]
pub enum OpsCommand {
    /// List sagas, oldest in their state first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Everything about one saga.
    Show { order_id: OrderId },
    /// In-flight sagas per definition version and state.
    Drain,
    /// End every ops console session now ("sign out everywhere"), e.g. after a leak.
    EndSessions,
    /// Bulk jobs, newest first: state, progress, who started them.
    Jobs {
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Stop a running bulk job before its next saga (what it did stays done).
    CancelJob {
        job_id: String,
        /// Who stops it.
        #[arg(long)]
        actor: String,
    },
    /// The audit trail of ops actions.
    Audit {
        #[arg(long)]
        order_id: Option<OrderId>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Re-send the current step's command with the same command id.
    RetryStep(Target),
    /// Fire a pending timer now.
    FireTimer {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        timer: String,
    },
    /// Move a pending timer.
    RescheduleTimer {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        timer: String,
        /// New due time (RFC 3339).
        #[arg(long)]
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// New due time from now, e.g. 30m.
        #[arg(long)]
        after: Option<String>,
    },
    /// Disarm a pending timer.
    CancelTimer {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        timer: String,
    },
    /// Cancel the order and compensate.
    Cancel(Target),
    /// Deliver a manual event of the definition (e.g. reservation.retry.requested).
    Force {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        event: String,
    },
    /// Lift the quarantine and replay the parked events in order.
    Release(Target),
    /// Skip the poison event(s), then release.
    SkipPoison(Target),
    /// Move the saga onto a newer loaded definition version, where that
    /// version's `[migrate.from.<its version>]` maps its state.
    Migrate {
        #[command(flatten)]
        target: Target,
        /// The definition version to move it to.
        #[arg(long)]
        to_version: u32,
    },
    /// Apply one action to every saga a filter selects (rate limited).
    Bulk {
        #[command(flatten)]
        filter: FilterArgs,
        /// retry_step, cancel, release, skip_poison, fire_timer, cancel_timer, force or migrate.
        #[arg(long)]
        action: String,
        /// For migrate: the definition version to move the sagas to.
        #[arg(long)]
        to_version: Option<u32>,
        /// For timer actions.
        #[arg(long)]
        timer: Option<String>,
        /// For force.
        #[arg(long)]
        event: Option<String>,
        /// Act on at most this many sagas.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        who: ActorArgs,
    },
}

fn print(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs one `order-saga ops` command with the ops surface the composition
/// root (`app`) built for it; `bulk_rate` is `ORDER_SAGA_OPS_BULK_RATE`.
pub async fn run(ops: Ops, bulk_rate: u32, args: OpsArgs) -> anyhow::Result<ExitCode> {
    let db = ops.db.clone();
    let catalog = ops.sagas.catalog.clone();
    let act = |t: Target, action: Action| Request {
        order_id: t.order_id,
        action,
        expected_version: t.expected_version,
        actor: t.who.actor,
        reason: t.who.reason,
        dry_run: t.who.dry_run,
        job_id: None,
    };
    let req = match args.command {
        OpsCommand::List { filter, limit, cursor } => {
            let after = match cursor.as_deref().map(|c| c.split_once('.')) {
                None => None,
                Some(Some((t, id))) => Some(SagaKeyset {
                    state_entered_at: t
                        .parse::<i64>()
                        .ok()
                        .and_then(chrono::DateTime::from_timestamp_micros)
                        .filter(|t| crate::store::limits::is_storable_time(*t))
                        .ok_or_else(|| anyhow::anyhow!("bad cursor"))?,
                    order_id: id.parse()?,
                }),
                Some(None) => anyhow::bail!("bad cursor"),
            };
            let (sagas, next) = inspect::list(&db, &catalog, &filter.filter(), after, limit.clamp(1, 500)).await?;
            print(&json!({
                "sagas": sagas,
                "next_cursor": next.map(|k| format!("{}.{}", k.state_entered_at.timestamp_micros(), k.order_id)),
            }));
            return Ok(ExitCode::SUCCESS);
        }
        OpsCommand::Show { order_id } => {
            return report(ops.show(order_id).await);
        }
        OpsCommand::Drain => {
            print(&inspect::drain(&db, &catalog).await?);
            return Ok(ExitCode::SUCCESS);
        }
        OpsCommand::EndSessions => {
            print(&json!({"ended": crate::store::sessions::delete_all(&db).await?}));
            return Ok(ExitCode::SUCCESS);
        }
        OpsCommand::Audit { order_id, limit } => {
            let q = inspect::AuditQuery { order_id, limit, ..Default::default() };
            print(&json!({"audit": inspect::audit(&db, &q).await?}));
            return Ok(ExitCode::SUCCESS);
        }
        OpsCommand::Bulk { filter, action, timer, event, to_version, limit, who } => {
            let action: Action = serde_json::from_value(
                json!({"action": action, "timer": timer, "event": event, "to_version": to_version})
                    .as_object()
                    .map(|o| {
                        serde_json::Value::Object(
                            o.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), v.clone())).collect(),
                        )
                    })
                    .unwrap_or_default(),
            )?;
            let b = BulkRequest {
                selection: serde_json::to_value(&filter).unwrap_or_default(),
                filter: filter.filter(),
                action,
                actor: who.actor,
                reason: who.reason,
                dry_run: true,
                limit: Some(limit),
                rate_per_second: bulk_rate,
            };
            let preview = ops.bulk(&b).await?;
            print(&preview);
            if who.dry_run {
                return Ok(ExitCode::SUCCESS);
            }
            // A durable job, like the API's: listed and stoppable in the
            // console, and resumed by a daemon if this command dies.
            let selected = inspect::select_for_bulk(&db, &catalog, &b.filter, limit).await?;
            let spec = ops.create_job(&b, &selected).await?;
            eprintln!(
                "job {} (stop it with `order-saga ops cancel-job {}` or in the console)",
                spec.job_id, spec.job_id
            );
            let total = selected.len();
            let (mut done, mut ok, mut failed) = (0, 0, 0);
            let end = ops
                .run_job(&spec, |order_id, r| {
                    done += 1;
                    match r {
                        Ok(()) => ok += 1,
                        Err(e) => {
                            failed += 1;
                            eprintln!("order {order_id}: {e}");
                        }
                    }
                    if done % 50 == 0 || done == total {
                        eprintln!("progress: {done}/{total}");
                    }
                })
                .await;
            let end = match end {
                JobEnd::Finished => "finished",
                JobEnd::Cancelled => "cancelled",
                JobEnd::Lost => "taken over by another runner",
            };
            print(&json!({"job_id": spec.job_id, "total": total, "applied": ok, "refused": failed, "end": end}));
            return Ok(if failed == 0 && end == "finished" { ExitCode::SUCCESS } else { ExitCode::from(3) });
        }
        OpsCommand::Jobs { limit } => {
            print(&json!({"jobs": ops.list_jobs(limit).await?}));
            return Ok(ExitCode::SUCCESS);
        }
        OpsCommand::CancelJob { job_id, actor } => {
            return match ops.cancel_job(&job_id, &actor).await? {
                Some(job) => {
                    print(&serde_json::to_value(&job)?);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no job {job_id}");
                    Ok(ExitCode::from(2))
                }
            };
        }
        OpsCommand::RetryStep(t) => act(t, Action::RetryStep),
        OpsCommand::FireTimer { target, timer } => act(target, Action::FireTimer { timer }),
        OpsCommand::RescheduleTimer { target, timer, at, after } => {
            act(target, Action::RescheduleTimer { timer, at, after })
        }
        OpsCommand::CancelTimer { target, timer } => act(target, Action::CancelTimer { timer }),
        OpsCommand::Cancel(t) => act(t, Action::Cancel),
        OpsCommand::Force { target, event } => act(target, Action::Force { event }),
        OpsCommand::Release(t) => act(t, Action::Release),
        OpsCommand::SkipPoison(t) => act(t, Action::SkipPoison),
        OpsCommand::Migrate { target, to_version } => act(target, Action::Migrate { to_version }),
    };
    report(ops.act(&req).await)
}

fn report<T: serde::Serialize>(r: Result<T, OpsError>) -> anyhow::Result<ExitCode> {
    match r {
        Ok(v) => {
            print(&v);
            Ok(ExitCode::SUCCESS)
        }
        Err(OpsError::Store(e)) => Err(e.into()),
        Err(e) => {
            eprintln!("refused: {e}");
            Ok(ExitCode::from(3))
        }
    }
}
