//! What the benchmarks read from the operating system: wall-clock nanos,
//! a process's resident memory and CPU time (from /proc), and this
//! process's own CPU time (getrusage), so a saturated client shows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME, the clock the emitter
/// stamps lines with).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A process's resident set size (VmRSS) in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (is the server running?)"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// A process's CPU time (user + system) in seconds, from /proc/PID/stat.
pub fn proc_cpu_secs(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from after its `)`.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 11 and 12 here.
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// This process's CPU time (user + system, all threads) in seconds.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// CPU use over an interval, as a percentage of one core.
pub struct CpuMeter {
    server_pid: Option<u32>,
    start: std::time::Instant,
    client0: f64,
    server0: Option<f64>,
}

impl CpuMeter {
    pub fn start(server_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            server_pid,
            start: std::time::Instant::now(),
            client0: self_cpu_secs(),
            server0: server_pid.and_then(|p| proc_cpu_secs(p).ok()),
        }
    }

    /// (client %, server %) of one core since `start`.
    pub fn percent(&self) -> (f64, Option<f64>) {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let client = (self_cpu_secs() - self.client0) / wall * 100.0;
        let server = match (self.server_pid, self.server0) {
            (Some(p), Some(s0)) => proc_cpu_secs(p).ok().map(|s| (s - s0) / wall * 100.0),
            _ => None,
        };
        (client, server)
    }
}

/// Samples a process's RSS on a thread of its own until stopped.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, u64)>,
}

impl RssSampler {
    pub fn start(pid: u32, every: Duration) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let (mut peak, mut samples) = (0u64, 0u64);
            loop {
                if let Ok(kib) = rss_kib(pid) {
                    peak = peak.max(kib);
                    samples += 1;
                }
                if flag.load(Ordering::Relaxed) {
                    return (peak, samples);
                }
                std::thread::sleep(every);
            }
        });
        RssSampler { stop, handle }
    }

    /// Stops; (peak KiB, number of samples).
    pub fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or((0, 0))
    }
}

/// The mean RSS (KiB) over `n` samples `every` apart.
pub async fn mean_rss_kib(pid: u32, n: u32, every: Duration) -> Result<u64> {
    let mut sum = 0;
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        sum += rss_kib(pid)?;
    }
    Ok(sum / u64::from(n.max(1)))
}
