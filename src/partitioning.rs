//! Which Kafka partition a published message goes to. Pure: no I/O; the
//! composition root gives it the topics' real partition counts.
//!
//! * `key` — the producer hashes the Kafka key (the order id), as Kafka
//!   clients do by default. The outbox row carries no partition.
//! * `tenant_region` — the partition comes from the order's region: a region
//!   in the map (`eu-west=0-3,us-east=4-7`) gets a partition of its range,
//!   chosen by the order id (so one order always lands on one partition, and a
//!   region's orders spread over its range); a region not in the map gets one
//!   partition by a stable hash of its name over the partitions no region owns
//!   (over all of them when every partition is owned — startup warns). The
//!   Kafka key stays the order id.
//!
//! The partition is computed when the outbox row is published, from the
//! order's region (which never changes) and, for a region not in the map, the
//! topic's partition count as this process learned it at its first publish to
//! the topic. It is not stored in the row. So after partitions are added to a
//! topic, a replica started before and one started after can place an unmapped
//! region's orders on different partitions until every replica has restarted:
//! treat adding partitions as a re-partitioning (README, "Regional
//! partitioning"), and map every region that needs per-order order across it.
//!
//! **Per-order order holds**: an order's region never changes, so every
//! message of one order on one topic gets the same partition.
//!
//! **Do not change** the hash functions: they place orders on partitions that
//! consumers rely on.

use crate::domain::OrderId;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::RwLock;

/// How the partition of a published message is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Strategy {
    /// The producer hashes the key (the order id).
    #[default]
    Key,
    /// From the order's region (see the module docs).
    TenantRegion,
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Key => "key",
            Strategy::TenantRegion => "tenant_region",
        })
    }
}

/// Regions and the partition ranges they own: `eu-west=0-3,us-east=4-7,ap-south=8`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionMap {
    ranges: BTreeMap<String, (i32, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("{0:?} is not REGION=FIRST-LAST or REGION=PARTITION (e.g. eu-west=0-3)")]
    Syntax(String),
    #[error("region {region}: range {first}-{last} is empty or negative")]
    Range { region: String, first: i32, last: i32 },
    #[error("region {region} is listed twice")]
    Duplicate { region: String },
    #[error("regions {a} and {b} share partitions: a regional consumer would read the other's events")]
    Overlap { a: String, b: String },
    #[error("region {region} maps to partitions {first}-{last}, but topic {topic} has {partitions} partitions")]
    BeyondTopic { region: String, first: i32, last: i32, topic: String, partitions: i32 },
    #[error("topic {topic} has no partitions (does it exist?)")]
    NoPartitions { topic: String },
}

impl FromStr for RegionMap {
    type Err = MapError;

    fn from_str(s: &str) -> Result<RegionMap, MapError> {
        let mut ranges: BTreeMap<String, (i32, i32)> = BTreeMap::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (region, range) = item.split_once('=').ok_or_else(|| MapError::Syntax(item.to_owned()))?;
            let region = region.trim();
            if region.is_empty() {
                return Err(MapError::Syntax(item.to_owned()));
            }
            let parse = |v: &str| v.trim().parse::<i32>().map_err(|_| MapError::Syntax(item.to_owned()));
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (parse(a)?, parse(b)?),
                None => {
                    let p = parse(range)?;
                    (p, p)
                }
            };
            if first < 0 || last < first {
                return Err(MapError::Range { region: region.to_owned(), first, last });
            }
            if ranges.insert(region.to_owned(), (first, last)).is_some() {
                return Err(MapError::Duplicate { region: region.to_owned() });
            }
        }
        let list: Vec<(&String, &(i32, i32))> = ranges.iter().collect();
        for (i, (a, ra)) in list.iter().enumerate() {
            for (b, rb) in &list[i + 1..] {
                if ra.0 <= rb.1 && rb.0 <= ra.1 {
                    return Err(MapError::Overlap { a: (*a).clone(), b: (*b).clone() });
                }
            }
        }
        Ok(RegionMap { ranges })
    }
}

impl RegionMap {
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.ranges.keys().map(String::as_str)
    }

    /// The partitions `region` owns, if it is mapped.
    pub fn range(&self, region: &str) -> Option<(i32, i32)> {
        self.ranges.get(region).copied()
    }

    /// Every mapped range fits a topic of `partitions` partitions.
    pub fn check(&self, topic: &str, partitions: i32) -> Result<(), MapError> {
        if partitions <= 0 {
            return Err(MapError::NoPartitions { topic: topic.to_owned() });
        }
        for (region, (first, last)) in &self.ranges {
            if *last >= partitions {
                return Err(MapError::BeyondTopic {
                    region: region.clone(),
                    first: *first,
                    last: *last,
                    topic: topic.to_owned(),
                    partitions,
                });
            }
        }
        Ok(())
    }

    /// The partitions no region owns on a topic of `partitions` partitions.
    fn unowned(&self, partitions: i32) -> Vec<i32> {
        (0..partitions).filter(|p| !self.ranges.values().any(|(a, b)| (a..=b).contains(&p))).collect()
    }
}

/// FNV-1a, 64 bits: stable across versions and platforms (unlike std's hasher).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Who reads a published message: the partitioning decision per kind.
/// Domain events are read by regional consumers (fulfilment, fraud,
/// analytics per region); commands are read by the participants, which
/// de-duplicate by command id and gain nothing from regional placement, so
/// they keep key hashing by default (`ORDER_SAGA_COMMAND_PARTITIONING`).
/// Derived from the message vocabulary (`contracts::Role`).
pub fn audience(kind: crate::contracts::MessageKind) -> Audience {
    use crate::contracts::Role;
    match kind.role() {
        Role::Event { .. } => Audience::Events,
        Role::Command(_) | Role::Compensation(_) => Audience::Commands,
        // Consumed, never published by this daemon.
        Role::Reply => Audience::Events,
    }
}

/// The kinds of published messages, for choosing a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// Domain events about orders (and their dead letters).
    Events,
    /// Commands to participants (inventory, payment).
    Commands,
}

/// The partition of a message cannot be chosen yet: its topic's partition
/// count is not known (the broker was unreachable so far). The row waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotReady;

/// Chooses partitions. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub struct Partitioner {
    pub events: Strategy,
    pub commands: Strategy,
    pub map: RegionMap,
    /// Partition counts of the topics a `tenant_region` strategy applies to,
    /// checked against the map. Learnt at startup, or later if the broker
    /// was unreachable then.
    partitions: RwLock<HashMap<String, i32>>,
}

impl Partitioner {
    /// `partitions`: the real partition count of every topic a
    /// `tenant_region` strategy applies to (may be incomplete: see
    /// [`learn`](Self::learn)). Checks the map against each.
    pub fn new(
        events: Strategy,
        commands: Strategy,
        map: RegionMap,
        partitions: HashMap<String, i32>,
    ) -> Result<Partitioner, MapError> {
        let p = Partitioner { events, commands, map, partitions: RwLock::default() };
        p.learn(partitions)?;
        Ok(p)
    }

    /// Adds partition counts after checking the map against each.
    pub fn learn(&self, counts: HashMap<String, i32>) -> Result<(), MapError> {
        let mut topics: Vec<(&String, &i32)> = counts.iter().collect();
        topics.sort();
        for (topic, n) in topics {
            self.map.check(topic, *n)?;
        }
        self.partitions.write().unwrap_or_else(|p| p.into_inner()).extend(counts);
        Ok(())
    }

    fn count(&self, topic: &str) -> Option<i32> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner()).get(topic).copied()
    }

    pub fn strategy(&self, audience: Audience) -> Strategy {
        match audience {
            Audience::Events => self.events,
            Audience::Commands => self.commands,
        }
    }

    /// The partition for a message of `order_id` in `region` on `topic`:
    /// `Ok(None)` when the producer should hash the key (the `key` strategy,
    /// or a message whose region is unknown), `Err(NotReady)` while the
    /// topic's partition count is unknown.
    pub fn partition(
        &self,
        audience: Audience,
        topic: &str,
        region: Option<&str>,
        order_id: Option<OrderId>,
    ) -> Result<Option<i32>, NotReady> {
        if self.strategy(audience) == Strategy::Key {
            return Ok(None);
        }
        let Some(region) = region else { return Ok(None) };
        let n = self.count(topic).ok_or(NotReady)?;
        Ok(Some(match self.map.range(region) {
            Some((first, last)) => {
                let width = u64::from((last - first + 1).unsigned_abs());
                // Orders spread over their region's range; one order, one partition.
                let spread = order_id.map_or(0, |o| o.get() % width);
                first + spread as i32
            }
            None => {
                let pool = self.map.unowned(n);
                let h = fnv1a(region);
                if pool.is_empty() {
                    (h % u64::from(n.unsigned_abs())) as i32
                } else {
                    pool[(h % pool.len() as u64) as usize]
                }
            }
        }))
    }

    /// Topics on which unmapped regions share partitions with mapped ones
    /// (every partition is owned): a regional consumer would see them.
    pub fn fully_owned_topics(&self) -> Vec<String> {
        if self.map.is_empty() {
            return Vec::new();
        }
        let counts = self.partitions.read().unwrap_or_else(|p| p.into_inner());
        let mut t: Vec<String> =
            counts.iter().filter(|(_, n)| self.map.unowned(**n).is_empty()).map(|(t, _)| t.clone()).collect();
        t.sort();
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ids::oid;

    fn regional(map: &str, partitions: i32) -> Partitioner {
        Partitioner::new(
            Strategy::TenantRegion,
            Strategy::Key,
            map.parse().unwrap(),
            HashMap::from([("events".to_owned(), partitions)]),
        )
        .unwrap()
    }

    #[test]
    fn maps_parse_and_bad_ones_are_named() {
        let m: RegionMap = "eu-west=0-3, us-east=4-7,ap-south=8".parse().unwrap();
        assert_eq!(m.range("eu-west"), Some((0, 3)));
        assert_eq!(m.range("ap-south"), Some((8, 8)));
        assert_eq!("".parse::<RegionMap>().unwrap(), RegionMap::default());
        assert!(matches!("eu".parse::<RegionMap>(), Err(MapError::Syntax(_))));
        assert!(matches!("eu=3-1".parse::<RegionMap>(), Err(MapError::Range { .. })));
        assert!(matches!("eu=-1".parse::<RegionMap>(), Err(MapError::Syntax(_))));
        assert!(matches!("eu=0,eu=1".parse::<RegionMap>(), Err(MapError::Duplicate { .. })));
        assert!(matches!("eu=0-3,us=3-4".parse::<RegionMap>(), Err(MapError::Overlap { .. })));
    }

    #[test]
    fn a_map_beyond_a_topic_is_refused_naming_topic_and_region() {
        let e = Partitioner::new(
            Strategy::TenantRegion,
            Strategy::Key,
            "eu-west=0-3,us-east=4-7".parse().unwrap(),
            HashMap::from([("order.created.v1".to_owned(), 6)]),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "region us-east maps to partitions 4-7, but topic order.created.v1 has 6 partitions");
    }

    #[test]
    fn mapped_regions_stay_in_their_range_and_one_order_on_one_partition() {
        let p = regional("eu-west=0-2,us-east=3-4", 8);
        for order in 1..500i64 {
            let eu = p.partition(Audience::Events, "events", Some("eu-west"), Some(oid(order))).unwrap().unwrap();
            assert!((0..=2).contains(&eu));
            let us = p.partition(Audience::Events, "events", Some("us-east"), Some(oid(order))).unwrap().unwrap();
            assert!((3..=4).contains(&us));
            assert_eq!(Ok(Some(eu)), p.partition(Audience::Events, "events", Some("eu-west"), Some(oid(order))));
        }
        // Spread over the whole range.
        let used: std::collections::HashSet<i32> = (1..50)
            .filter_map(|o| p.partition(Audience::Events, "events", Some("eu-west"), Some(oid(o))).unwrap())
            .collect();
        assert_eq!(used.len(), 3);
    }

    #[test]
    fn unmapped_regions_get_a_stable_partition_outside_every_mapped_range() {
        let p = regional("eu-west=0-2,us-east=3-4", 8);
        for region in ["mars", "ap-south", "x", ""] {
            let first = p.partition(Audience::Events, "events", Some(region), Some(oid(1))).unwrap().unwrap();
            assert!((5..=7).contains(&first), "{region} -> {first}");
            for order in 2..50 {
                assert_eq!(Ok(Some(first)), p.partition(Audience::Events, "events", Some(region), Some(oid(order))));
            }
        }
        // Stable across versions and platforms: the published FNV-1a test vectors.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert!(p.fully_owned_topics().is_empty());
        let full = regional("a=0-3,b=4-7", 8);
        assert_eq!(full.fully_owned_topics(), vec!["events".to_owned()]);
        assert!(full.partition(Audience::Events, "events", Some("c"), Some(oid(1))).unwrap().is_some());
    }

    #[test]
    fn key_strategy_leaves_it_to_the_producer_and_unknown_counts_wait() {
        let p = regional("eu-west=0-2", 8);
        assert_eq!(p.partition(Audience::Commands, "events", Some("eu-west"), Some(oid(1))), Ok(None));
        assert_eq!(p.partition(Audience::Events, "events", None, Some(oid(1))), Ok(None));
        let key = Partitioner::default();
        assert_eq!(key.partition(Audience::Events, "events", Some("eu-west"), Some(oid(1))), Ok(None));
        // A topic whose partition count is not known yet: the row waits.
        assert_eq!(p.partition(Audience::Events, "other", Some("eu-west"), Some(oid(1))), Err(NotReady));
        p.learn(HashMap::from([("other".to_owned(), 4)])).unwrap();
        assert!(p.partition(Audience::Events, "other", Some("eu-west"), Some(oid(1))).unwrap().is_some());
        assert!(p.learn(HashMap::from([("small".to_owned(), 2)])).is_err(), "eu-west=0-2 does not fit 2 partitions");
    }
}
