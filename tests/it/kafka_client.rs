//! The Kafka client's poll loops wait instead of spinning.
//!
//! rdkafka 0.39.0 turned a poll's remaining time into whole milliseconds by
//! truncation, so a loop that polls until a deadline (`BaseProducer::poll`,
//! which the threaded producer's polling thread runs 100 ms at a time) spun
//! through the last sub-millisecond of every wait: about 1 % of a core per
//! producer, the largest part of an idle daemon's CPU. `vendor/rdkafka` rounds
//! up; this test fails if the patch is dropped while the released crate still
//! truncates.

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer as _};

/// CPU time this thread has used, from `/proc/thread-self/stat` (clock ticks).
fn thread_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read /proc/thread-self/stat");
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").expect("a stat line").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_poll_shorter_than_a_millisecond_waits_instead_of_spinning() {
    // No broker is needed: nothing is produced, the queue stays empty.
    let producer: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", "127.0.0.1:1").create().expect("create a producer");
    let cpu0 = thread_cpu_ticks();
    let t0 = Instant::now();
    for _ in 0..300 {
        producer.poll(Duration::from_micros(900));
    }
    let wall = t0.elapsed();
    let ticks = thread_cpu_ticks() - cpu0;
    // /proc counts in USER_HZ, 100 per second on Linux whatever the kernel.
    let cpu = Duration::from_millis(ticks * 10);
    // Truncated, each 0.9 ms poll is a 0 ms wait repeated for 0.9 ms: the
    // thread is busy the whole time. Waiting, it is nearly never on a CPU.
    assert!(cpu * 4 < wall, "polling for {wall:?} used {cpu:?} of CPU: the poll loop spins");
    drop(producer.flush(Duration::from_millis(10)));
}
