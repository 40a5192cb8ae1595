//! The fan-out benchmark's job: prints `<k> <unix nanos>` lines (k from 1)
//! at a fixed rate for a fixed time, so every subscriber can tell each
//! line's emission time and check it got every k exactly once.
//!
//! Line k is due (k-1)/RATE seconds after the start; every millisecond the
//! emitter writes the lines that are due, each stamped as it is written,
//! and flushes. If the reader (opsdeck) does not keep up, the pipe blocks,
//! the stamps spread out, and the subscribers see a lower achieved rate.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::sys::now_ns;

pub fn run(rate: u64, secs: u64) -> Result<()> {
    if rate == 0 || secs == 0 {
        bail!("emit: rate and secs must be positive");
    }
    let total = rate * secs;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let start = Instant::now();
    let tick = Duration::from_millis(1);
    let mut next_tick = start;
    let mut k = 0u64;
    while k < total {
        let elapsed = start.elapsed().as_nanos() as u64;
        let due = (elapsed as u128 * rate as u128 / 1_000_000_000) as u64 + 1;
        while k < due.min(total) {
            k += 1;
            writeln!(out, "{k} {}", now_ns()).context("emit: cannot write")?;
        }
        out.flush().context("emit: cannot write")?;
        next_tick += tick;
        let now = Instant::now();
        if next_tick > now {
            std::thread::sleep(next_tick - now);
        } else {
            next_tick = now;
        }
    }
    Ok(())
}
