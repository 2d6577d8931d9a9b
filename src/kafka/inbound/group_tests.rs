//! The committer's grouping, fallback and limits on a fake transaction: no
//! database. Event ids say what the fake does: `bad…` fails any transaction
//! it is in, `slow…` holds its transaction until the test releases it.

use std::sync::Mutex;

use tokio::sync::Semaphore;

use super::*;
use crate::orchestrator::{InboundOutcome, Source};

fn run(ids: &[&str]) -> Vec<Inbound> {
    ids.iter()
        .map(|id| Inbound {
            event_id: (*id).to_owned(),
            order_id: None,
            event_name: "test".into(),
            event: Err("test".into()),
            source: Source::Ops,
            trace: None,
            raw: None,
        })
        .collect()
}

struct Fake {
    /// The event ids of every transaction, in the order they began.
    began: Mutex<Vec<Vec<String>>>,
    /// Runs per transaction, as reported to `grouped`.
    groups: Mutex<Vec<usize>>,
    /// Permits for transactions holding a `slow…` event.
    release: Semaphore,
}

impl Default for Fake {
    fn default() -> Self {
        Fake { began: Mutex::default(), groups: Mutex::default(), release: Semaphore::new(0) }
    }
}

/// An outcome that names its event.
fn named(id: &str) -> InboundOutcome {
    InboundOutcome::StaleReply { event: id.to_owned(), reason: String::new() }
}

impl RunApplier for Arc<Fake> {
    type Failure = String;

    async fn apply(&self, run: &[Inbound]) -> Result<BatchResult, String> {
        let ids: Vec<String> = run.iter().map(|i| i.event_id.clone()).collect();
        self.began.lock().unwrap().push(ids.clone());
        if ids.iter().any(|i| i.starts_with("slow")) {
            self.release.acquire().await.unwrap().forget();
        }
        if let Some(bad) = ids.iter().find(|i| i.starts_with("bad")) {
            return Err(format!("refused {bad}"));
        }
        // One outcome per event, naming it; the whole transaction's outbox rows.
        let outcomes = ids.iter().map(|i| named(i)).collect();
        Ok(BatchResult { outcomes, outbox_rows: ids.len(), ..BatchResult::default() })
    }

    fn grouped(&self, runs: usize) {
        self.groups.lock().unwrap().push(runs);
    }
}

fn limits(max_runs: usize, max_events: usize, in_flight: usize) -> GroupLimits {
    GroupLimits { max_runs, max_events, in_flight, linger: Duration::ZERO }
}

fn told(r: &Result<BatchResult, String>) -> Vec<String> {
    match r {
        Ok(b) => b
            .outcomes
            .iter()
            .map(|o| match o {
                InboundOutcome::StaleReply { event, .. } => event.clone(),
                other => format!("{other:?}"),
            })
            .collect(),
        Err(e) => vec![e.clone()],
    }
}

/// Queues the runs `ids`, in order, at once.
fn submit(c: &RunCommitter<String>, ids: &[&[&str]]) -> Vec<oneshot::Receiver<Result<BatchResult, String>>> {
    ids.iter().map(|ids| c.submit(run(ids)).unwrap()).collect()
}

/// Waits until the fake has begun `n` transactions.
async fn began(fake: &Fake, n: usize) {
    while fake.began.lock().unwrap().len() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn runs_that_arrive_while_one_commits_share_the_next_transaction() {
    let fake = Arc::new(Fake::default());
    let c = RunCommitter::spawn(fake.clone(), limits(16, 1000, 1));
    let first = c.submit(run(&["slow-1"])).unwrap();
    began(&fake, 1).await;
    // Queued in this order while the only slot commits.
    let later = submit(&c, &[&["a-1", "a-2"], &["b-1"], &["c-1", "c-2", "c-3"]]);
    fake.release.add_permits(1);

    assert_eq!(told(&first.await.unwrap()), ["slow-1"]);
    let answers: Vec<_> = futures::future::join_all(later).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(told(&answers[0]), ["a-1", "a-2"]);
    assert_eq!(told(&answers[1]), ["b-1"]);
    assert_eq!(told(&answers[2]), ["c-1", "c-2", "c-3"]);
    // The whole transaction's effects are told once, to the group's first run.
    let rows: Vec<usize> = answers.iter().map(|a| a.as_ref().unwrap().outbox_rows).collect();
    assert_eq!(rows, [6, 0, 0]);
    assert_eq!(*fake.began.lock().unwrap(), [vec!["slow-1"], vec!["a-1", "a-2", "b-1", "c-1", "c-2", "c-3"]]);
    assert_eq!(*fake.groups.lock().unwrap(), [1, 3]);
}

#[tokio::test]
async fn a_failed_shared_transaction_is_rolled_back_and_every_run_goes_alone() {
    let fake = Arc::new(Fake::default());
    let c = RunCommitter::spawn(fake.clone(), limits(16, 1000, 1));
    let first = c.submit(run(&["slow-1"])).unwrap();
    began(&fake, 1).await;
    let later = submit(&c, &[&["a-1"], &["bad-1", "b-2"], &["c-1"]]);
    fake.release.add_permits(1);
    first.await.unwrap().unwrap();

    let answers: Vec<_> = futures::future::join_all(later).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(told(&answers[0]), ["a-1"]);
    assert_eq!(told(&answers[1]), ["refused bad-1"], "the run that fails is told its own failure");
    assert_eq!(told(&answers[2]), ["c-1"]);
    assert_eq!(
        *fake.began.lock().unwrap(),
        [vec!["slow-1"], vec!["a-1", "bad-1", "b-2", "c-1"], vec!["a-1"], vec!["bad-1", "b-2"], vec!["c-1"]]
    );
}

#[tokio::test]
async fn a_group_takes_runs_up_to_its_limit_and_the_next_one_the_rest_in_order() {
    let fake = Arc::new(Fake::default());
    // Three runs per transaction.
    let c = RunCommitter::spawn(fake.clone(), limits(3, 1000, 1));
    let first = c.submit(run(&["slow-1"])).unwrap();
    began(&fake, 1).await;
    let later = submit(&c, &[&["a-1"], &["b-1"], &["c-1"], &["d-1", "d-2"], &["e-1"]]);
    fake.release.add_permits(1);
    first.await.unwrap().unwrap();
    for a in futures::future::join_all(later).await {
        a.unwrap().unwrap();
    }
    assert_eq!(*fake.began.lock().unwrap(), [vec!["slow-1"], vec!["a-1", "b-1", "c-1"], vec!["d-1", "d-2", "e-1"]]);
}

#[tokio::test]
async fn a_run_that_pays_for_its_own_transaction_does_not_wait_for_a_slot() {
    let fake = Arc::new(Fake::default());
    // Four runs or eight events per transaction: a fair share is two events.
    let c = RunCommitter::spawn(fake.clone(), limits(4, 8, 1));
    let first = c.submit(run(&["slow-1"])).unwrap();
    began(&fake, 1).await;
    let small = c.submit(run(&["a-1"])).unwrap();
    // The only slot is taken and stays taken: a long run commits anyway,
    // alone (checked in bounded steps: were it to wait, the test would hang).
    let big = c.submit(run(&["big-1", "big-2"])).unwrap();
    for _ in 0..10_000 {
        if fake.began.lock().unwrap().len() >= 2 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.began.lock().unwrap().len(), 2, "the long run began while the slot was taken");
    assert_eq!(told(&big.await.unwrap()), ["big-1", "big-2"]);
    fake.release.add_permits(1);
    first.await.unwrap().unwrap();
    assert_eq!(told(&small.await.unwrap()), ["a-1"]);
    assert_eq!(*fake.began.lock().unwrap(), [vec!["slow-1"], vec!["big-1", "big-2"], vec!["a-1"]]);
}

#[test]
fn runs_shorter_than_a_fair_share_of_a_group_share() {
    let l = limits(16, 200, 2);
    assert!(l.shares(1) && l.shares(12));
    assert!(!l.shares(13) && !l.shares(200));
}

#[tokio::test]
async fn with_a_free_slot_a_run_goes_at_once() {
    let fake = Arc::new(Fake::default());
    let c = RunCommitter::spawn(fake.clone(), limits(16, 1000, 2));
    let first = c.submit(run(&["slow-1"])).unwrap();
    began(&fake, 1).await;
    // The second slot is free: this run does not wait for the slow one.
    assert_eq!(told(&c.apply(run(&["a-1"])).await.unwrap()), ["a-1"]);
    fake.release.add_permits(1);
    first.await.unwrap().unwrap();
    assert_eq!(*fake.groups.lock().unwrap(), [1, 1]);
}

#[test]
fn a_shared_result_is_told_back_per_run() {
    let out = named;
    let whole = BatchResult {
        outcomes: vec![out("a"), out("b"), out("c")],
        dwell: vec![("X".into(), 1.0)],
        outbox_rows: 4,
        ..BatchResult::default()
    };
    let parts = split(whole, &[2, 1]);
    assert_eq!(parts[0].outcomes, [out("a"), out("b")]);
    assert_eq!((parts[0].outbox_rows, parts[0].dwell.len()), (4, 1));
    assert_eq!(parts[1].outcomes, [out("c")]);
    assert_eq!((parts[1].outbox_rows, parts[1].dwell.len()), (0, 0));
    // Not one outcome per event: everything to the first run.
    let odd = BatchResult { outcomes: vec![out("a")], ..BatchResult::default() };
    let parts = split(odd, &[1, 1]);
    assert_eq!((parts[0].outcomes.len(), parts[1].outcomes.len()), (1, 0));
}

// Deliberate batching. Time is tokio's paused clock: it moves only when every
// task waits, so "5 ms later" is exact and nothing depends on this machine's speed.

#[tokio::test(start_paused = true)]
async fn a_lingering_group_waits_for_more_runs_and_commits_once_it_is_full() {
    let fake = Arc::new(Fake::default());
    let c = RunCommitter::spawn(fake.clone(), GroupLimits { linger: Duration::from_millis(10), ..limits(2, 1000, 1) });
    let a = c.submit(run(&["a-1"])).unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(fake.began.lock().unwrap().is_empty(), "within its linger the group has not begun");
    let b = c.submit(run(&["b-1"])).unwrap();
    assert_eq!(told(&a.await.unwrap()), ["a-1"]);
    assert_eq!(told(&b.await.unwrap()), ["b-1"]);
    // Full at two runs: it went without waiting out the rest of its linger.
    assert_eq!(*fake.began.lock().unwrap(), [vec!["a-1", "b-1"]]);
}

#[tokio::test(start_paused = true)]
async fn a_lingering_group_commits_when_its_first_run_has_waited_the_linger() {
    let fake = Arc::new(Fake::default());
    let c = RunCommitter::spawn(fake.clone(), GroupLimits { linger: Duration::from_millis(10), ..limits(16, 1000, 1) });
    let started = tokio::time::Instant::now();
    let a = c.submit(run(&["a-1"])).unwrap();
    assert_eq!(told(&a.await.unwrap()), ["a-1"]);
    assert_eq!(started.elapsed(), Duration::from_millis(10), "it waited exactly its linger for company");
    let b = c.submit(run(&["b-1"])).unwrap();
    assert_eq!(told(&b.await.unwrap()), ["b-1"]);
    assert_eq!(*fake.began.lock().unwrap(), [vec!["a-1"], vec!["b-1"]]);
}

#[tokio::test(start_paused = true)]
async fn without_a_linger_a_run_commits_at_once() {
    let fake = Arc::new(Fake::default());
    let c = RunCommitter::spawn(fake.clone(), limits(16, 1000, 1));
    let started = tokio::time::Instant::now();
    let a = c.submit(run(&["a-1"])).unwrap();
    assert_eq!(told(&a.await.unwrap()), ["a-1"]);
    assert_eq!(started.elapsed(), Duration::ZERO);
}
