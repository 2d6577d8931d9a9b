//! The relay's scheduling rules on a simulated clock: no database, no broker.

use std::time::{Duration, Instant};

use super::{Action, Fresh, Schedule, backoff};
use crate::outbox::settle::{SETTLE_DELAY, SETTLE_WRITES};
use crate::store::outbox::{RelayWakeup, ShardWindow, Waiting};

const BATCH: usize = 10;
const POLL: Duration = Duration::from_millis(500);

/// A schedule holding shards 0..4 (all its fair share); acks are row ids.
fn holding_four(t0: Instant) -> Schedule<u64> {
    let mut s = Schedule::new(BATCH, POLL, t0);
    s.handle_owned(&[0, 1, 2, 3], 4);
    s
}

/// Everything `poll` asks for now.
fn drain(s: &mut Schedule<u64>, now: Instant) -> Vec<Action<u64>> {
    std::iter::from_fn(|| s.poll(now)).take(10).collect()
}

#[test]
fn nothing_is_read_without_a_shard() {
    let t0 = Instant::now();
    let mut s: Schedule<u64> = Schedule::new(BATCH, POLL, t0);
    assert_eq!(s.poll(t0), None);
    s.handle_owned(&[2], 1);
    assert_eq!(s.poll(t0), Some(Action::Probe(vec![2])));
}

#[test]
fn a_read_goes_where_rows_wait_and_asks_first_where_nothing_says() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    assert_eq!(s.poll(t0), Some(Action::Probe(vec![0, 1, 2, 3])), "rows may wait from before");
    s.handle_dispatched(t0, Ok(vec![2]));
    assert_eq!(s.poll(t0), Some(Action::Dispatch(vec![2])), "a full window: more waits in its shard");
    s.handle_dispatched(t0, Ok(vec![]));
    assert_eq!(s.poll(t0), None, "a short read: nothing more until told");
    assert_eq!(s.poll_timeout(), t0 + POLL);
    s.handle_wakeup(Waiting::Shards([3, 1, 9].into()));
    assert_eq!(s.poll(t0), Some(Action::Dispatch(vec![1, 3])), "the shards the commits wrote, of those held here");
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_wakeup(Waiting::Shards([9].into()));
    assert_eq!(s.poll(t0), None, "another replica's shard");
    s.handle_wakeup(Waiting::Anywhere);
    assert_eq!(s.poll(t0), Some(Action::Probe(vec![0, 1, 2, 3])), "a commit that cannot say where");
    s.handle_dispatched(t0, Ok(vec![]));
    assert_eq!(s.poll(t0 + POLL - Duration::from_millis(1)), None);
    assert_eq!(
        s.poll(t0 + POLL),
        Some(Action::Probe(vec![0, 1, 2, 3])),
        "the poll interval finds other replicas' rows"
    );
}

#[test]
fn wakeups_add_up_until_a_read_takes_them() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    for id in 0..(BATCH * 4) as u64 {
        s.sent(id, 0);
    }
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_wakeup(Waiting::Shards([2].into()));
    s.handle_wakeup(Waiting::Nowhere);
    s.handle_wakeup(Waiting::Shards([1].into()));
    assert_eq!(s.poll(t0), None, "the pipeline is full");
    s.handle_settled(t0, &[0], true);
    assert_eq!(
        s.poll(t0),
        Some(Action::Dispatch(vec![0, 1, 2, 3])),
        "kept while the pipeline was full; busy: every shard"
    );
    s.handle_settled(t0, &(1..(BATCH * 4) as u64).collect::<Vec<_>>(), true);
    s.handle_wakeup(Waiting::Shards([2].into()));
    s.handle_wakeup(Waiting::Shards([1].into()));
    assert_eq!(s.poll(t0), Some(Action::Dispatch(vec![1, 2])), "nothing in flight: both named shards, only those");
    s.sent(500, 3);
    s.handle_wakeup(Waiting::Shards([2].into()));
    s.handle_wakeup(Waiting::Anywhere);
    s.handle_wakeup(Waiting::Shards([3].into()));
    assert_eq!(
        s.poll(t0),
        Some(Action::Dispatch(vec![0, 1, 2, 3])),
        "anywhere covers the rest; busy: no question first"
    );
    assert_eq!(s.poll(t0), None, "taken");
}

#[test]
fn a_read_takes_each_shards_rows_in_flight_plus_an_even_share_of_a_batch() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.sent(100, 1);
    s.sent(101, 1);
    s.sent(102, 3);
    // BATCH 10 over 4 shards: 3 each (rounded up), plus what is in flight there.
    let w = |shard, limit| ShardWindow { shard, limit };
    assert_eq!(s.windows(&[0, 1, 2, 3]), vec![w(0, 3), w(1, 5), w(2, 3), w(3, 4)]);
    assert_eq!(s.windows(&[1]), vec![w(1, 12)], "one shard read alone gets the whole batch");
    assert_eq!(s.windows(&[]), vec![]);
}

#[test]
fn rows_in_flight_are_not_sent_again_and_a_full_window_means_more_is_waiting() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.sent(100, 1);
    let windows = s.windows(&[0, 1]);
    assert_eq!(windows, vec![ShardWindow { shard: 0, limit: 5 }, ShardWindow { shard: 1, limit: 6 }]);
    // Shard 0 returned less than its window; shard 1 its whole window (one in flight).
    let short = [(1, 0), (2, 0), (100, 1), (101, 1), (102, 1), (103, 1), (104, 1)];
    assert_eq!(s.fresh(&windows, &short), Fresh { ids: vec![1, 2, 101, 102, 103, 104], more: vec![] });
    let full = [(1, 0), (100, 1), (101, 1), (102, 1), (103, 1), (104, 1), (105, 1)];
    assert_eq!(s.fresh(&windows, &full), Fresh { ids: vec![1, 101, 102, 103, 104, 105], more: vec![1] });
    assert_eq!(s.fresh(&windows, &[]), Fresh { ids: vec![], more: vec![] });
}

#[test]
fn a_read_sends_at_most_a_batch_and_reads_again_for_the_rest() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    // Twenty rows counted in flight in shard 0 whose settlement is being
    // written: the read no longer returns them, so the window is all fresh rows.
    for id in 0..20 {
        s.sent(id, 0);
    }
    let windows = s.windows(&[0, 2]);
    let mut read: Vec<(u64, u16)> = (100..115).map(|id| (id, 0)).collect();
    read.push((120, 2));
    let fresh = s.fresh(&windows, &read);
    assert_eq!(fresh.ids, (100..100 + BATCH as u64).collect::<Vec<_>>(), "the oldest batch");
    assert_eq!(fresh.more, vec![0, 2], "the rest is read next");
}

#[test]
fn acks_are_settled_together_after_the_settle_delay_or_a_batchs_worth() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_ack(t0, 1);
    s.handle_ack(t0 + Duration::from_millis(1), 2);
    assert_eq!(s.poll(t0), None, "the first ack waits for company");
    assert_eq!(s.poll_timeout(), t0 + SETTLE_DELAY);
    assert_eq!(s.poll(t0 + SETTLE_DELAY), Some(Action::Settle(vec![1, 2])));
    for id in 0..BATCH as u64 {
        s.handle_ack(t0 + SETTLE_DELAY, 100 + id);
    }
    let acks = match s.poll(t0 + SETTLE_DELAY) {
        Some(Action::Settle(acks)) => acks,
        other => panic!("a batch's worth is settled at once, got {other:?}"),
    };
    assert_eq!(acks.len(), BATCH);
}

#[test]
fn at_most_settle_writes_settlements_run_at_once() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    s.handle_dispatched(t0, Ok(vec![]));
    for n in 0..SETTLE_WRITES as u64 {
        s.handle_ack(t0, n);
        assert_eq!(s.poll(t0 + SETTLE_DELAY), Some(Action::Settle(vec![n])));
    }
    s.handle_ack(t0, 99);
    assert_eq!(s.poll(t0 + SETTLE_DELAY), None, "{SETTLE_WRITES} writes running");
    s.handle_settled(t0 + SETTLE_DELAY, &[0], true);
    assert_eq!(s.poll(t0 + SETTLE_DELAY), Some(Action::Settle(vec![99])));
}

#[test]
fn a_row_stays_in_flight_until_settled_and_a_settlement_is_no_reason_to_read() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    s.sent(7, 3);
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_ack(t0, 7);
    assert!(matches!(s.poll(t0 + SETTLE_DELAY), Some(Action::Settle(_))));
    assert!(s.is_in_flight(7), "acknowledged but not yet marked: must not be sent again");
    s.handle_settled(t0 + SETTLE_DELAY, &[7], true);
    assert!(!s.is_in_flight(7));
    assert_eq!(s.poll(t0 + SETTLE_DELAY), None, "a short read saw every pending row; marking them adds none");
    s.handle_wakeup(Waiting::Shards([3].into()));
    assert_eq!(s.poll(t0 + SETTLE_DELAY), Some(Action::Dispatch(vec![3])), "a commit does");
}

#[test]
fn a_full_pipeline_is_not_read_until_a_settlement_frees_room() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    for id in 0..(BATCH * 4) as u64 {
        s.sent(id, 0);
    }
    s.handle_dispatched(t0, Ok(vec![0]));
    assert_eq!(s.poll(t0), None, "{} rows in flight", BATCH * 4);
    s.handle_settled(t0, &[0], true);
    assert_eq!(s.poll(t0), Some(Action::Dispatch(vec![0, 1, 2, 3])), "busy: every shard");
}

#[test]
fn a_failed_read_backs_off_doubling_and_stops_listening_to_wakeups() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    let mut now = t0;
    for failures in 1..=5 {
        assert_eq!(s.poll(now), Some(Action::Probe(vec![0, 1, 2, 3])), "try {failures}: all again");
        s.handle_dispatched(now, Err(()));
        assert!(!s.listens_to_wakeups(), "commits do not cut the back-off short");
        assert_eq!(s.poll(now), None);
        // The next read: at the poll interval, or later once the back-off is longer.
        let next = s.poll_timeout();
        assert_eq!(next, (now + POLL).max(now + backoff(failures)));
        now = next;
    }
    assert!(backoff(5) > POLL, "the back-off outgrows the poll interval");
    assert_eq!(backoff(30), Duration::from_secs(5), "bounded");
    assert!(matches!(s.poll(now), Some(Action::Probe(_))));
    s.handle_dispatched(now, Ok(vec![]));
    s.handle_settle_decided(now, 1, 0);
    assert!(s.listens_to_wakeups(), "a delivery ends the back-off");
}

#[test]
fn a_settlement_with_nothing_delivered_backs_off_and_a_delivery_ends_the_backoff() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_settle_decided(t0, 0, 5);
    assert!(!s.listens_to_wakeups(), "the broker refuses everything");
    s.handle_settle_decided(t0, 1, 4);
    assert!(s.listens_to_wakeups(), "something got through");
}

#[test]
fn a_failed_settlement_write_backs_off_and_its_rows_are_read_again() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    s.sent(1, 0);
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_ack(t0, 1);
    s.poll(t0 + SETTLE_DELAY);
    s.handle_settled(t0 + SETTLE_DELAY, &[1], false);
    assert!(!s.is_in_flight(1), "the next read may send it again");
    assert_eq!(s.poll(t0 + SETTLE_DELAY), None, "after a back-off");
    assert_eq!(s.poll(t0 + SETTLE_DELAY + backoff(1)), Some(Action::Dispatch(vec![0])), "its shard");
}

#[test]
fn surplus_shards_are_not_read_and_are_released_once_idle() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.poll(t0);
    s.sent(1, 2);
    s.sent(2, 3);
    s.handle_dispatched(t0, Ok(vec![]));
    // A second replica appeared: the fair share is two.
    s.handle_owned(&[0, 1, 2, 3], 2);
    assert_eq!(s.readable(), &[0, 1]);
    assert_eq!(drain(&mut s, t0), vec![Action::Dispatch(vec![0, 1])], "shards 2 and 3 have rows in flight");
    s.handle_dispatched(t0, Ok(vec![]));
    s.handle_settled(t0, &[1], true);
    assert_eq!(drain(&mut s, t0), vec![Action::Release(vec![2])]);
    s.handle_released(t0, &[2], true);
    assert_eq!(drain(&mut s, t0), vec![], "shard 2 is not released twice");
    s.handle_settled(t0, &[2], true);
    assert_eq!(drain(&mut s, t0)[0], Action::Release(vec![3]));
}

#[test]
fn a_failed_release_is_tried_again_after_the_poll_interval() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.handle_owned(&[0, 1, 2, 3], 3);
    assert_eq!(s.poll(t0), Some(Action::Release(vec![3])));
    s.handle_released(t0, &[3], false);
    assert_eq!(s.poll(t0), Some(Action::Probe(vec![0, 1, 2])));
    s.handle_dispatched(t0, Ok(vec![]));
    assert_eq!(s.poll(t0), None, "not retried in a tight loop");
    assert_eq!(s.poll_timeout(), t0 + POLL);
    assert_eq!(s.poll(t0 + POLL), Some(Action::Release(vec![3])));
}

#[test]
fn a_shard_the_lease_loop_stops_listing_can_be_released_again_later() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.handle_owned(&[0, 1, 2, 3], 3);
    assert_eq!(s.poll(t0), Some(Action::Release(vec![3])));
    s.handle_released(t0, &[3], true);
    s.handle_owned(&[0, 1, 2], 3);
    // Later it is ours again, and again surplus.
    s.handle_owned(&[0, 1, 2, 3], 3);
    assert_eq!(s.poll(t0), Some(Action::Release(vec![3])));
}

#[test]
fn shutdown_waits_for_the_acks_of_rows_in_flight() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    s.sent(1, 0);
    s.sent(2, 0);
    s.handle_ack(t0, 1);
    assert!(s.awaiting_acks());
    s.handle_ack(t0, 2);
    assert!(!s.awaiting_acks());
    assert_eq!(s.take_acks(), vec![1, 2]);
}

#[tokio::test]
async fn a_wakeup_tells_once_where_rows_were_committed() {
    let w = RelayWakeup::default();
    w.rows_committed([3]);
    w.rows_committed([1, 3]);
    w.notified().await;
    assert_eq!(w.take(), Waiting::Shards([1, 3].into()));
    assert_eq!(w.take(), Waiting::Nowhere, "taken");
    w.rows_committed_anywhere();
    w.rows_committed([2]);
    assert_eq!(w.take(), Waiting::Anywhere);
}

#[test]
fn held_rows_are_skipped_only_while_a_hold_may_last() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    assert!(s.holds_unknown(), "its shards' last holder may have set rows aside");
    assert!(s.skips_held(t0), "not known: the costly read");
    s.handle_holds_found(t0, Some(Duration::from_secs(7)));
    assert!(!s.holds_unknown());
    assert!(s.skips_held(t0 + Duration::from_secs(6)));
    assert!(!s.skips_held(t0 + Duration::from_secs(7)), "the table's last hold has ended");

    // Its own holds, from before their write.
    let t1 = t0 + Duration::from_secs(10);
    s.handle_holding(t1, Duration::from_secs(300));
    s.handle_holding(t1, Duration::from_secs(1));
    assert!(s.skips_held(t1 + Duration::from_secs(299)), "a shorter hold does not shorten a longer one");
    assert!(!s.skips_held(t1 + Duration::from_secs(300)));

    // A shard gained: ask again; a shard lost: nothing to ask.
    s.handle_owned(&[0, 1, 2], 4);
    assert!(!s.holds_unknown());
    s.handle_owned(&[0, 1, 2, 5], 4);
    assert!(s.holds_unknown() && s.skips_held(t1 + Duration::from_secs(400)));
    s.handle_holds_found(t1 + Duration::from_secs(400), None);
    assert!(!s.skips_held(t1 + Duration::from_secs(400)), "nothing held");
}

#[test]
fn a_hold_written_while_the_table_is_asked_is_not_forgotten() {
    let t0 = Instant::now();
    let mut s = holding_four(t0);
    // The settlement's hold starts; the question's answer cannot have seen it.
    s.handle_holding(t0, Duration::from_secs(300));
    s.handle_holds_found(t0, None);
    assert!(s.skips_held(t0 + Duration::from_secs(10)));
}
