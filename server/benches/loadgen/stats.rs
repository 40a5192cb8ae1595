//! Percentiles. Small samples are sorted (nearest rank); the fan-out
//! latencies (up to 10⁸ per run) go into a histogram of 10 µs buckets, whose
//! percentiles are the upper edge of the bucket holding the nearest rank
//! (so they may read up to 10 µs high, never low). The maximum is exact.

use std::sync::atomic::{AtomicU64, Ordering};

/// Nearest-rank percentile (`q` in 0..=1) of a sorted slice.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Bucket width.
const BUCKET_NS: u64 = 10_000;
/// 10 µs × 1,000,000 = 10 s; anything slower lands in the last bucket.
const BUCKETS: usize = 1_000_000;

/// A latency histogram shared by every subscriber task. The client runs on
/// one thread, so the relaxed atomics are never contended; they only make
/// the histogram shareable between tasks without locks.
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    max_ns: AtomicU64,
    /// Samples whose receipt was stamped before their emission (clock
    /// oddities); counted as 0.
    negative: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            negative: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records `received - emitted` (both Unix nanos).
    pub fn record(&self, emitted_ns: u64, received_ns: u64) {
        let ns = match received_ns.checked_sub(emitted_ns) {
            Some(ns) => ns,
            None => {
                self.negative.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
        let i = ((ns / BUCKET_NS) as usize).min(BUCKETS - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn negative(&self) -> u64 {
        self.negative.load(Ordering::Relaxed)
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ns.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The `q` percentile in milliseconds (NaN when empty).
    pub fn percentile_ms(&self, q: f64) -> f64 {
        let count = self.count();
        if count == 0 {
            return f64::NAN;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= rank {
                let upper = (i as u64 + 1) * BUCKET_NS;
                return upper.min(self.max_ns.load(Ordering::Relaxed)) as f64 / 1e6;
            }
        }
        self.max_ms()
    }
}
