//! What the Event writer remembers, and what it decides from it: one Event per (object,
//! problem) while the problem stands, a series update at most once per interval while it
//! persists, a token bucket over every write, and a bounded memory that forgets what is
//! fixed or deleted. Pure: time is passed in, so tests choose it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::reason::Reason;
use crate::model::ObjectKey;

/// One problem of one object, as an Event says it: what is written once.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Occurrence {
    /// The object.
    pub object: ObjectKey,
    /// `metadata.uid` of the object: a recreated object is told again.
    pub uid: String,
    /// The class of the problem.
    pub reason: Reason,
    /// The problem's text, as written.
    pub note: String,
}

/// An Event written for an occurrence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Namespace of the Event.
    pub namespace: String,
    /// Name of the Event.
    pub name: String,
    /// How often the problem was seen: 1 when created, one more per series update.
    pub count: u32,
    /// When the Event was last created or updated.
    pub at: Instant,
}

/// What to do about one occurrence now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Told already, and recently enough.
    Nothing,
    /// Create an Event.
    Create,
    /// The problem persists: update this Event's series to the count given.
    Refresh(Written),
    /// Refused by the rate limit; decided again next round.
    RateLimited,
    /// The memory is full; decided again next round, once something is forgotten.
    MemoryFull,
}

/// The bounds of the writer.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Writes per second, sustained.
    pub per_second: f64,
    /// Writes allowed at once.
    pub burst: u32,
    /// Most occurrences remembered.
    pub capacity: usize,
    /// Least time between two writes of one Event (its creation, then series updates).
    pub series_interval: Duration,
}

impl Default for Limits {
    /// As client-go's Event recorder: 25/s with bursts of 50, series updated at most every
    /// 5 minutes; 10 000 occurrences remembered.
    fn default() -> Self {
        Self {
            per_second: 25.0,
            burst: 50,
            capacity: 10_000,
            series_interval: Duration::from_secs(300),
        }
    }
}

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug)]
struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(per_second: f64, burst: u32, now: Instant) -> Self {
        Self {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The Events written, by occurrence, and the limits on writing more.
#[derive(Debug)]
pub struct Recorder {
    written: BTreeMap<Occurrence, Written>,
    bucket: TokenBucket,
    limits: Limits,
    /// Suffix of the next Event name: unique in this process, and (seeded from the clock)
    /// across restarts.
    next_name: u64,
}

impl Recorder {
    /// Nothing written yet; `seed` starts the Event names' suffixes.
    pub fn new(limits: Limits, now: Instant, seed: u64) -> Self {
        Self {
            written: BTreeMap::new(),
            bucket: TokenBucket::new(limits.per_second, limits.burst, now),
            limits,
            next_name: seed,
        }
    }

    /// Forgets every occurrence that no longer stands: its object was fixed or deleted.
    pub fn retain(&mut self, standing: &BTreeSet<Occurrence>) {
        self.written
            .retain(|occurrence, _| standing.contains(occurrence));
    }

    /// What to do about `occurrence`, which stands now; takes a token for any write.
    pub fn decide(&mut self, occurrence: &Occurrence, now: Instant) -> Decision {
        let due = match self.written.get(occurrence) {
            Some(w) if now.saturating_duration_since(w.at) < self.limits.series_interval => {
                return Decision::Nothing;
            }
            Some(w) => Some(w.clone()),
            None if self.written.len() >= self.limits.capacity => return Decision::MemoryFull,
            None => None,
        };
        if !self.bucket.take(now) {
            return Decision::RateLimited;
        }
        match due {
            Some(w) => Decision::Refresh(Written {
                count: w.count.saturating_add(1),
                at: now,
                ..w
            }),
            None => Decision::Create,
        }
    }

    /// A name for a new Event about the object `object_name`: `<object>.<hex>`, as
    /// client-go names them, within the 253 characters of a name.
    pub fn name_for(&mut self, object_name: &str) -> String {
        let suffix = format!("{:x}", self.next_name);
        self.next_name = self.next_name.wrapping_add(1);
        let mut end = object_name.len().min(252 - suffix.len());
        while !object_name.is_char_boundary(end) {
            end -= 1;
        }
        // A name cut in the middle must still end with a letter or digit.
        let stem = object_name[..end].trim_end_matches(['-', '.']);
        format!("{stem}.{suffix}")
    }

    /// Records a written Event (created, or its series updated).
    pub fn written(&mut self, occurrence: Occurrence, event: Written) {
        self.written.insert(occurrence, event);
    }

    /// Forgets an occurrence whose Event is gone (expired or deleted): the next round
    /// creates a new one.
    pub fn forget(&mut self, occurrence: &Occurrence) {
        self.written.remove(occurrence);
    }

    /// Occurrences remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.written.len()
    }

    /// True when nothing is remembered.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.written.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence(name: &str) -> Occurrence {
        Occurrence {
            object: ObjectKey::new("AuthorizationPolicy", "shop", name),
            uid: format!("uid-{name}"),
            reason: Reason::FailedClosed,
            note: "spec.action: unknown action".into(),
        }
    }

    fn limits(burst: u32) -> Limits {
        Limits {
            per_second: 2.0,
            burst,
            capacity: 3,
            series_interval: Duration::from_secs(300),
        }
    }

    fn written(recorder: &mut Recorder, o: &Occurrence, at: Instant) {
        let event = Written {
            namespace: "shop".into(),
            name: recorder.name_for(&o.object.name),
            count: 1,
            at,
        };
        recorder.written(o.clone(), event);
    }

    /// On the runtime's clock, paused: the interval is counted as the writer counts it.
    #[tokio::test(start_paused = true)]
    async fn one_event_per_problem_then_a_series_update_per_interval() {
        let start = Instant::now();
        let mut r = Recorder::new(limits(10), start, 0);
        let a = occurrence("a");
        assert_eq!(r.decide(&a, start), Decision::Create);
        written(&mut r, &a, start);
        tokio::time::advance(Duration::from_secs(299)).await;
        assert_eq!(r.decide(&a, Instant::now()), Decision::Nothing);
        tokio::time::advance(Duration::from_secs(1)).await;
        let due = Instant::now();
        let Decision::Refresh(w) = r.decide(&a, due) else {
            panic!("a series update is due");
        };
        assert_eq!((w.count, w.name.as_str(), w.at), (2, "a.0", due));
        r.written(a.clone(), w);
        assert_eq!(
            r.decide(&a, due + Duration::from_secs(1)),
            Decision::Nothing
        );
    }

    #[test]
    fn fixed_problems_are_forgotten_and_told_again_when_they_return() {
        let start = Instant::now();
        let mut r = Recorder::new(limits(10), start, 0);
        let (a, b) = (occurrence("a"), occurrence("b"));
        written(&mut r, &a, start);
        written(&mut r, &b, start);
        r.retain(&BTreeSet::from([b.clone()]));
        assert_eq!(r.len(), 1);
        assert_eq!(r.decide(&b, start), Decision::Nothing);
        assert_eq!(r.decide(&a, start), Decision::Create);
        r.forget(&b);
        assert!(r.decide(&b, start) == Decision::Create && r.is_empty());
    }

    #[test]
    fn the_bucket_refuses_past_its_burst_and_refills_with_time() {
        let start = Instant::now();
        let mut r = Recorder::new(limits(2), start, 0);
        let decisions: Vec<Decision> = ["a", "b", "c"]
            .iter()
            .map(|n| r.decide(&occurrence(n), start))
            .collect();
        assert_eq!(
            decisions,
            [Decision::Create, Decision::Create, Decision::RateLimited]
        );
        // 2 per second: one token back after half a second.
        let refilled = start + Duration::from_millis(500);
        assert_eq!(r.decide(&occurrence("c"), refilled), Decision::Create);
        assert_eq!(r.decide(&occurrence("d"), refilled), Decision::RateLimited);
    }

    #[test]
    fn memory_is_bounded() {
        let start = Instant::now();
        let mut r = Recorder::new(limits(10), start, 0);
        for name in ["a", "b", "c"] {
            written(&mut r, &occurrence(name), start);
        }
        assert_eq!(r.decide(&occurrence("d"), start), Decision::MemoryFull);
        // Remembered ones are still refreshed when due.
        let due = start + Duration::from_secs(300);
        assert!(matches!(
            r.decide(&occurrence("a"), due),
            Decision::Refresh(_)
        ));
    }

    #[test]
    fn names_are_unique_and_valid() {
        let mut r = Recorder::new(limits(1), Instant::now(), 0xfe);
        assert_eq!(r.name_for("deny"), "deny.fe");
        assert_eq!(r.name_for("deny"), "deny.ff");
        let long = format!("{}-x", "a".repeat(249));
        let name = r.name_for(&long);
        assert_eq!(name.len(), 249 + 1 + 3, "{name}");
        assert!(name.starts_with(&"a".repeat(249)) && name.ends_with(".100"));
    }
}
