//! The relay's scheduling as a sans-IO state machine (quinn-proto's shape):
//! the driver in [`Relay::run`](super::Relay::run) reports what happened with
//! the `handle_*` methods, asks [`Schedule::poll`] what to do next, does it,
//! and sleeps until [`Schedule::poll_timeout`] or the next event. No
//! database, no broker, no runtime: time comes in as an argument, so every
//! rule below is unit-tested on a simulated clock.
//!
//! The rules:
//!
//! * **Dispatch** (read pending rows and send them) when there is reason to
//!   think rows are waiting — a business transaction woke the relay, a
//!   shard's window came back full, a settlement write failed, the shards
//!   changed, or the poll interval passed — and the pipeline has room
//!   (`max_in_flight` rows sent and not settled) and no back-off is running.
//!   A read wanted while the pipeline is full waits for a settlement to free
//!   room; a settlement by itself is no reason to read (BENCHMARKS.md, "The
//!   relay's reads").
//! * **Only where rows wait, when quiet**: a wake-up names the shards its
//!   transaction wrote, a full window names its shard, a failed settlement
//!   the shards of its rows. With no row in flight those are read, and only
//!   those; busy, every shard is read, so that rows committed and not yet
//!   announced go in this read. Where nothing names the shards (the poll
//!   interval, new shards, a failed read), every shard is read — after
//!   asking the table which shards have rows ([`Action::Probe`]) when no row
//!   is in flight, the idle case. A read of
//!   every shard costs the database several times a read of one, and at
//!   idle nothing is read at all (BENCHMARKS.md, "Wake-ups that name their
//!   shards").
//! * **The held-row rule only where rows may be held**: a read skips rows
//!   set aside (`held_until`) and their orders' later rows only while a hold
//!   may last in its shards — the table's latest hold, asked when a shard is
//!   gained, and this relay's own holds since — because the rule costs the
//!   database three times the read without it (BENCHMARKS.md, "Reads that
//!   skip the held-row rule").
//! * **Windows**: a read takes from each shard its rows in flight plus an
//!   even share of a batch, so it costs about what it returns, however long
//!   the backlog (BENCHMARKS.md, "The relay at overload").
//! * **Settle** delivery results in groups: once [`SETTLE_DELAY`] has passed
//!   since the first waiting ack, or a batch's worth is waiting, with at most
//!   [`SETTLE_WRITES`] settlement writes running. A row stays in flight until
//!   its settlement is written, so no read sends it again meanwhile.
//! * **Back off** (100 ms doubling to 5 s) after a failed read, a failed
//!   settlement write, or a settlement in which nothing was delivered; any
//!   delivery resets it. Wake-ups from business transactions are ignored
//!   while backing off (the database or broker is the problem, not latency).
//! * **Hand shards off**: when the lease loop reports more shards than this
//!   replica's fair share, the surplus is no longer read at once, and each
//!   surplus shard is released once none of its rows is in flight. A failed
//!   release is tried again after the poll interval.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::settle::{SETTLE_DELAY, SETTLE_WRITES};
use crate::store::outbox::{ShardWindow, Waiting};

/// Back-off before the next read after `failures` consecutive failures:
/// 100 ms doubling to 5 s.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_millis((100u64 << failures.min(6)).min(5_000))
}

/// What the driver does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Action<A> {
    /// Decide these delivery results and write them (off the loop); report
    /// with [`Schedule::handle_settle_decided`] and, once written,
    /// [`Schedule::handle_settled`].
    Settle(Vec<A>),
    /// Give these surplus shards back; report with [`Schedule::handle_released`].
    Release(Vec<u16>),
    /// Read pending rows of these shards and send them, recording each sent
    /// row with [`Schedule::sent`]; report with [`Schedule::handle_dispatched`].
    Dispatch(Vec<u16>),
    /// Ask the table which of these shards have pending rows, then do as for
    /// [`Action::Dispatch`] with those (nothing to read when none has).
    Probe(Vec<u16>),
}

/// What one read brought: see [`Schedule::fresh`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fresh {
    pub(super) ids: Vec<u64>,
    /// Shards where more is probably waiting (ascending).
    pub(super) more: Vec<u16>,
}

/// The relay's scheduling state. `A` is a delivery result (the driver's
/// `Ack`); the schedule only queues them.
#[derive(Debug)]
pub(super) struct Schedule<A> {
    batch: usize,
    max_in_flight: usize,
    poll_interval: Duration,
    /// Rows sent and not yet settled: id → shard.
    in_flight: HashMap<u64, u16>,
    /// Shards this relay holds, and its fair share of them (from the lease loop).
    owned: Vec<u16>,
    fair: usize,
    /// Surplus shards released, until the lease loop stops listing them.
    released: HashSet<u16>,
    /// No release is tried before this (after a failed one).
    release_at: Option<Instant>,
    /// Delivery results waiting to be settled.
    acks: Vec<A>,
    /// When the waiting acks are settled at the latest.
    settle_at: Option<Instant>,
    /// Settlement writes running.
    settling: usize,
    failures: u32,
    retry_at: Instant,
    /// Where rows are thought to wait: read there when the pipeline has room.
    want: Waiting,
    next_poll: Instant,
    /// Until when rows set aside before this relay knew its shards may be
    /// held; `None` while that is not known (at start, a shard gained).
    table_holds: Option<Instant>,
    /// Until when rows this relay set aside may be held.
    own_holds: Option<Instant>,
}

impl<A> Schedule<A> {
    /// A schedule that dispatches at once (rows may be waiting from before).
    pub(super) fn new(batch: usize, poll_interval: Duration, now: Instant) -> Schedule<A> {
        Schedule {
            batch,
            max_in_flight: batch * 4,
            poll_interval,
            in_flight: HashMap::new(),
            owned: Vec::new(),
            fair: 0,
            released: HashSet::new(),
            release_at: None,
            acks: Vec::new(),
            settle_at: None,
            settling: 0,
            failures: 0,
            retry_at: now,
            want: Waiting::Anywhere,
            next_poll: now + poll_interval,
            table_holds: None,
            own_holds: None,
        }
    }

    /// Whether the table must be asked how long its holds last
    /// ([`Schedule::handle_holds_found`]) before the next read.
    pub(super) fn holds_unknown(&self) -> bool {
        self.table_holds.is_none()
    }

    /// The table's latest hold lasts `remaining` more (`None`: nothing held).
    pub(super) fn handle_holds_found(&mut self, now: Instant, remaining: Option<Duration>) {
        self.table_holds = Some(now + remaining.unwrap_or_default());
    }

    /// This relay is setting rows aside for at most `lasting` (from before
    /// its write starts, so a read that follows it skips them).
    pub(super) fn handle_holding(&mut self, now: Instant, lasting: Duration) {
        let until = now + lasting;
        self.own_holds = Some(self.own_holds.map_or(until, |t| t.max(until)));
    }

    /// Whether a read now must skip held rows and their orders' later rows:
    /// while holds are not known, or may still last.
    pub(super) fn skips_held(&self, now: Instant) -> bool {
        let lasts = |t: Option<Instant>| t.is_some_and(|t| now < t);
        self.holds_unknown() || lasts(self.table_holds) || lasts(self.own_holds)
    }

    /// The lease loop's latest word: the shards held and the fair share.
    pub(super) fn handle_owned(&mut self, owned: &[u16], fair: u32) {
        if owned != self.owned.as_slice() || fair as usize != self.fair {
            self.want.add(Waiting::Anywhere);
        }
        if owned.iter().any(|s| !self.owned.contains(s)) {
            // Its last holder may have set rows aside there.
            self.table_holds = None;
        }
        self.owned = owned.to_vec();
        self.fair = fair as usize;
        self.released.retain(|s| owned.contains(s));
    }

    /// Business transactions committed outbox rows (where `waiting` says).
    pub(super) fn handle_wakeup(&mut self, waiting: Waiting) {
        self.want.add(waiting);
    }

    /// Whether wake-ups are worth listening to (not while backing off).
    pub(super) fn listens_to_wakeups(&self) -> bool {
        self.failures == 0
    }

    /// A delivery result arrived.
    pub(super) fn handle_ack(&mut self, now: Instant, ack: A) {
        self.acks.push(ack);
        self.settle_at.get_or_insert(now + SETTLE_DELAY);
    }

    /// A row was sent (it is in flight until its settlement is written).
    pub(super) fn sent(&mut self, id: u64, shard: u16) {
        self.in_flight.insert(id, shard);
    }

    /// Whether a row is sent and not yet settled.
    pub(super) fn is_in_flight(&self, id: u64) -> bool {
        self.in_flight.contains_key(&id)
    }

    /// Rows sent and not yet settled.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How much of each shard's queue a read of `shards` takes: the rows in
    /// flight there (the read returns them too; [`Schedule::fresh`] drops
    /// them) plus an even share of a batch. A read thus costs the database
    /// about a batch plus the pipeline, whatever the backlog.
    pub(super) fn windows(&self, shards: &[u16]) -> Vec<ShardWindow> {
        let share = self.batch.div_ceil(shards.len().max(1)).max(1);
        let mut in_flight: HashMap<u16, usize> = HashMap::new();
        for shard in self.in_flight.values() {
            *in_flight.entry(*shard).or_default() += 1;
        }
        shards
            .iter()
            .map(|&shard| {
                let limit = in_flight.get(&shard).copied().unwrap_or(0) + share;
                ShardWindow { shard, limit: u32::try_from(limit).unwrap_or(u32::MAX) }
            })
            .collect()
    }

    /// What a read through `windows` returned (`(id, shard)`, in id order)
    /// comes to: the oldest ids not already in flight, at most a batch, to
    /// send, and the shards where more is probably waiting (the window came
    /// back full, or the batch cut the read short).
    pub(super) fn fresh(&self, windows: &[ShardWindow], read: &[(u64, u16)]) -> Fresh {
        let mut returned: HashMap<u16, u32> = HashMap::new();
        for (_, shard) in read {
            *returned.entry(*shard).or_default() += 1;
        }
        let mut more: BTreeSet<u16> =
            windows.iter().filter(|w| returned.get(&w.shard).is_some_and(|n| *n >= w.limit)).map(|w| w.shard).collect();
        let fresh: Vec<(u64, u16)> = read.iter().copied().filter(|(id, _)| !self.is_in_flight(*id)).collect();
        // Rows counted in flight may be marked already (their settlement is
        // being written), so a window can hold more fresh rows than its
        // share: at most a batch is sent per read, the rest next time.
        more.extend(fresh.iter().skip(self.batch).map(|(_, shard)| *shard));
        Fresh { ids: fresh.iter().take(self.batch).map(|(id, _)| *id).collect(), more: more.into_iter().collect() }
    }

    /// A [`Action::Dispatch`] or [`Action::Probe`] finished: `Ok(the shards
    /// where more is probably waiting)` (see [`Schedule::fresh`]), or it
    /// failed (everything is read again after the back-off).
    pub(super) fn handle_dispatched(&mut self, now: Instant, read: Result<Vec<u16>, ()>) {
        match read {
            Ok(more) => self.want.add_shards(more),
            Err(()) => {
                self.fail(now);
                self.want.add(Waiting::Anywhere);
            }
        }
    }

    /// An [`Action::Settle`] was decided: whether anything was delivered
    /// and whether anything failed.
    pub(super) fn handle_settle_decided(&mut self, now: Instant, delivered: usize, failed: usize) {
        if failed > 0 && delivered == 0 {
            self.fail(now);
        } else {
            self.failures = 0;
        }
    }

    /// A settlement write finished: its rows leave the in-flight set (marked,
    /// or to be read and sent again if the write failed, after a back-off).
    pub(super) fn handle_settled(&mut self, now: Instant, ids: &[u64], written: bool) {
        self.settling = self.settling.saturating_sub(1);
        let shards: Vec<u16> = ids.iter().filter_map(|id| self.in_flight.remove(id)).collect();
        if !written {
            // Unmarked: they are pending again, read after the back-off.
            self.fail(now);
            self.want.add_shards(shards);
        }
        // Room in the pipeline again: a read held back by a full pipeline
        // kept its wish (`poll` clears it only when it dispatches) and goes
        // now. A settlement alone is no sign of new rows: the commits that
        // wrote them woke the relay already.
    }

    /// A [`Action::Release`] finished.
    pub(super) fn handle_released(&mut self, now: Instant, shards: &[u16], ok: bool) {
        if !ok {
            for s in shards {
                self.released.remove(s);
            }
            self.release_at = Some(now + self.poll_interval);
        }
    }

    /// The next thing to do now, if any. Call until it returns `None`.
    pub(super) fn poll(&mut self, now: Instant) -> Option<Action<A>> {
        let settle_due = self.settle_at.is_some_and(|t| t <= now) || self.acks.len() >= self.batch;
        if settle_due && !self.acks.is_empty() && self.settling < SETTLE_WRITES {
            self.settle_at = None;
            self.settling += 1;
            return Some(Action::Settle(std::mem::take(&mut self.acks)));
        }
        if now >= self.next_poll {
            // Rows that woke no one here: another replica's, or held ones due.
            self.want.add(Waiting::Anywhere);
            self.next_poll = now + self.poll_interval;
        }
        if self.release_at.is_none_or(|t| t <= now) {
            let idle: Vec<u16> = self
                .surplus()
                .iter()
                .copied()
                .filter(|s| !self.released.contains(s) && !self.in_flight.values().any(|shard| shard == s))
                .collect();
            if !idle.is_empty() {
                self.release_at = None;
                // Not offered again until the driver reports.
                self.released.extend(&idle);
                return Some(Action::Release(idle));
            }
        }
        if self.want != Waiting::Nowhere && self.may_dispatch(now) {
            match std::mem::take(&mut self.want) {
                // Asking first pays only when little is likely to wait: with
                // rows in flight the shards are busy, and at overload the
                // question itself grew costly (BENCHMARKS.md, "Wake-ups that
                // name their shards").
                Waiting::Anywhere if self.in_flight.is_empty() => {
                    return Some(Action::Probe(self.readable().to_vec()));
                }
                Waiting::Anywhere => return Some(Action::Dispatch(self.readable().to_vec())),
                Waiting::Shards(wanted) => {
                    let shards: Vec<u16> = self.readable().iter().copied().filter(|s| wanted.contains(s)).collect();
                    if !shards.is_empty() {
                        // Busy (rows in flight): every shard, so that rows
                        // committed and not yet announced go in this read
                        // rather than the next (BENCHMARKS.md, "Wake-ups that
                        // name their shards", at 600/s).
                        if self.in_flight.is_empty() {
                            return Some(Action::Dispatch(shards));
                        }
                        return Some(Action::Dispatch(self.readable().to_vec()));
                    }
                }
                Waiting::Nowhere => {}
            }
        }
        None
    }

    /// When to poll again at the latest if nothing happens.
    pub(super) fn poll_timeout(&self) -> Instant {
        let mut wake = self.next_poll;
        if let Some(t) = self.settle_at {
            wake = wake.min(t);
        }
        if let Some(t) = self.release_at {
            wake = wake.min(t);
        }
        if self.failures > 0 {
            wake = wake.max(self.retry_at);
        }
        wake
    }

    /// Shards whose rows this relay reads: its fair share of those it holds.
    pub(super) fn readable(&self) -> &[u16] {
        &self.owned[..self.owned.len().min(self.fair)]
    }

    /// At shutdown: settlement writes still running.
    pub(super) fn settling(&self) -> usize {
        self.settling
    }

    /// At shutdown: every delivery result not yet settled.
    pub(super) fn take_acks(&mut self) -> Vec<A> {
        self.settle_at = None;
        std::mem::take(&mut self.acks)
    }

    /// At shutdown: results still expected (rows in flight without an ack).
    pub(super) fn awaiting_acks(&self) -> bool {
        self.acks.len() < self.in_flight.len()
    }

    fn surplus(&self) -> &[u16] {
        &self.owned[self.owned.len().min(self.fair)..]
    }

    fn may_dispatch(&self, now: Instant) -> bool {
        !self.readable().is_empty() && self.in_flight.len() < self.max_in_flight && now >= self.retry_at
    }

    fn fail(&mut self, now: Instant) {
        self.failures += 1;
        self.retry_at = now + backoff(self.failures);
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
