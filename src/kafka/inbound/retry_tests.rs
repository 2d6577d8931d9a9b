//! The split-and-retry policy driven on a simulated clock: a fake database
//! decides each transaction's fate, the test reads what was applied, what
//! was dead-lettered, how many transactions it took and how long it slept.

use super::*;

/// What a driven batch did.
#[derive(Debug, Default)]
struct Trace {
    /// Events committed, in commit order.
    applied: Vec<usize>,
    dead_letters: Vec<usize>,
    transactions: usize,
    /// Every sleep, in order.
    waits: Vec<Duration>,
    reactions: Vec<Reaction>,
    /// The mode each run was applied in.
    modes: Vec<UnknownVersion>,
}

/// Drives a batch of `n` to the end (or `max_steps`), asking `db` the fate
/// of each transaction at the simulated time since the start.
fn drive(n: usize, patience: Duration, mut db: impl FnMut(&Step, Duration) -> Result<(), Failure>) -> Trace {
    let start = Instant::now();
    let mut clock = Duration::ZERO;
    let mut policy = BatchRetry::new(n, patience);
    let mut t = Trace::default();
    for _ in 0..10_000 {
        let step = policy.poll(start + clock);
        match &step {
            Step::Done => return t,
            Step::Wait(d) => {
                t.waits.push(*d);
                clock += *d;
                continue;
            }
            Step::Apply { unknown, .. } => t.modes.push(*unknown),
            Step::DeadLetter { .. } => {}
        }
        t.transactions += 1;
        match db(&step, clock) {
            Ok(()) => {
                match step {
                    Step::Apply { run, .. } => t.applied.extend(run),
                    Step::DeadLetter { index } => t.dead_letters.push(index),
                    Step::Wait(_) | Step::Done => unreachable!("only transactions reach the database"),
                }
                policy.applied();
            }
            Err(f) => t.reactions.extend(policy.failed(start + clock, f)),
        }
    }
    panic!("the policy never finished: {t:?}");
}

fn contains(step: &Step, i: usize) -> bool {
    matches!(step, Step::Apply { run, .. } if run.contains(&i))
}

const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn a_batch_that_commits_takes_one_transaction_and_no_wait() {
    let t = drive(8, PATIENCE, |_, _| Ok(()));
    assert_eq!(t.applied, (0..8).collect::<Vec<_>>());
    assert_eq!((t.transactions, t.waits.len()), (1, 0));
    assert_eq!(drive(0, PATIENCE, |_, _| Ok(())).transactions, 0, "an empty batch is done at once");
}

#[test]
fn any_single_culprit_is_dead_lettered_and_everything_else_applied_in_order() {
    for n in 1..=64usize {
        for culprit in 0..n {
            let t = drive(n, PATIENCE, |step, _| if contains(step, culprit) { Err(Failure::Refused) } else { Ok(()) });
            assert_eq!(t.dead_letters, vec![culprit], "n={n}");
            let expected: Vec<usize> = (0..n).filter(|&i| i != culprit).collect();
            assert_eq!(t.applied, expected, "n={n}: everything else applied, in order");
            // log2(n) splits down, each with its sibling, plus the confirmations
            // of the culprit alone and its dead letter.
            let depth = (usize::BITS - n.leading_zeros()) as usize;
            let bound = 2 * depth + 1 + REFUSALS_BEFORE_DEAD_LETTER as usize + 1;
            assert!(t.transactions <= bound, "n={n} culprit={culprit}: {} > {bound}", t.transactions);
        }
    }
}

#[test]
fn an_event_refused_alone_is_confirmed_with_backoff_before_it_is_blamed() {
    let t = drive(1, PATIENCE, |step, _| if contains(step, 0) { Err(Failure::Refused) } else { Ok(()) });
    assert_eq!(t.dead_letters, vec![0]);
    assert_eq!(
        t.reactions,
        vec![
            Reaction::Retry { cause: RetryCause::Refused, attempt: 0 },
            Reaction::Retry { cause: RetryCause::Refused, attempt: 1 },
            Reaction::Retry { cause: RetryCause::Refused, attempt: 2 },
            Reaction::DeadLetter { index: 0 },
        ]
    );
    assert_eq!(t.waits, vec![backoff(0), backoff(1), backoff(2)]);
}

#[test]
fn a_refusal_that_passes_costs_the_event_nothing() {
    // The server refuses twice (an error code not known as transient), then accepts.
    let mut refusals = 2;
    let t = drive(1, PATIENCE, |_, _| {
        if refusals > 0 {
            refusals -= 1;
            return Err(Failure::Refused);
        }
        Ok(())
    });
    assert_eq!((t.applied, t.dead_letters), (vec![0], vec![]));
}

#[test]
fn a_transient_failure_retries_the_whole_run_with_growing_backoff_and_never_splits() {
    let mut failures = 10;
    let t = drive(8, PATIENCE, |_, _| {
        if failures > 0 {
            failures -= 1;
            return Err(Failure::Transient);
        }
        Ok(())
    });
    assert_eq!(t.applied, (0..8).collect::<Vec<_>>());
    assert!(t.reactions.iter().all(|r| matches!(r, Reaction::Retry { cause: RetryCause::Database, .. })));
    let ms: Vec<u128> = t.waits.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    assert_eq!(t.dead_letters, Vec::<usize>::new());
}

#[test]
fn the_backoff_starts_again_after_a_commit() {
    // The batch is split; event 0 commits after two transient failures,
    // then event 1 fails once: its wait starts from the bottom again.
    let mut calls = 0;
    let t = drive(2, PATIENCE, |step, _| {
        calls += 1;
        match (calls, step) {
            (1, _) => Err(Failure::Refused),
            (2 | 3, _) => Err(Failure::Transient),
            (5, _) => Err(Failure::Transient),
            _ => Ok(()),
        }
    });
    assert_eq!(t.applied, vec![0, 1]);
    assert_eq!(t.waits, vec![backoff(0), backoff(1), backoff(0)]);
}

#[test]
fn a_missing_definition_version_is_waited_for_then_quarantined_after_the_patience() {
    // The database answers "definition not loaded" until the run is applied
    // in quarantine mode (the saga is parked, not waited for).
    let t = drive(3, PATIENCE, |step, _| match step {
        Step::Apply { unknown: UnknownVersion::Wait, .. } => Err(Failure::DefinitionNotLoaded),
        _ => Ok(()),
    });
    assert_eq!(t.applied, vec![0, 1, 2]);
    assert_eq!(t.modes.last(), Some(&UnknownVersion::Quarantine));
    let waited: Duration = t.waits.iter().sum();
    assert!(waited >= PATIENCE, "waited {waited:?}, patience {PATIENCE:?}");
    assert!(waited < PATIENCE + backoff(u32::MAX), "quarantined at the first poll after the patience: {waited:?}");
    assert!(t.reactions.iter().all(|r| matches!(r, Reaction::Retry { cause: RetryCause::DefinitionVersion, .. })));
}

#[test]
fn a_version_deployed_within_the_patience_is_applied_normally() {
    let t = drive(
        1,
        PATIENCE,
        |_, now| if now < Duration::from_secs(5) { Err(Failure::DefinitionNotLoaded) } else { Ok(()) },
    );
    assert_eq!(t.applied, vec![0]);
    assert!(t.modes.iter().all(|m| *m == UnknownVersion::Wait), "{:?}", t.modes);
}

#[test]
fn a_dead_letter_that_fails_is_waited_out_and_the_event_tried_again() {
    // The event is refused; its dead-letter copy fails once (the database's
    // fault, not the event's); the event is then tried from the start.
    let mut dead_letter_failures = 1;
    let t = drive(1, PATIENCE, |step, _| match step {
        Step::DeadLetter { .. } if dead_letter_failures > 0 => {
            dead_letter_failures -= 1;
            Err(Failure::Transient)
        }
        Step::DeadLetter { .. } => Ok(()),
        _ => Err(Failure::Refused),
    });
    assert_eq!(t.dead_letters, vec![0]);
    let retries_after_dead_letter = t
        .reactions
        .iter()
        .skip_while(|r| !matches!(r, Reaction::DeadLetter { .. }))
        .skip(1)
        .take(1)
        .collect::<Vec<_>>();
    assert!(
        matches!(retries_after_dead_letter[..], [Reaction::Retry { cause: RetryCause::Database, .. }]),
        "{:?}",
        t.reactions
    );
    let refused_alone =
        t.reactions.iter().filter(|r| matches!(r, Reaction::Retry { cause: RetryCause::Refused, .. })).count();
    assert_eq!(refused_alone, 2 * REFUSALS_BEFORE_DEAD_LETTER as usize, "confirmed again after the wait");
}

#[test]
fn polling_twice_hands_out_the_step_in_flight_again() {
    let now = Instant::now();
    let mut p = BatchRetry::new(4, PATIENCE);
    let first = p.poll(now);
    assert_eq!(p.poll(now), first);
    p.applied();
    assert_eq!(p.poll(now), Step::Done);
    assert_eq!(p.failed(now, Failure::Refused), None, "nothing in flight: nothing changes");
    assert_eq!(p.poll(now), Step::Done);
}
