//! Process groups: a job runs as the leader of its own session (so of its
//! own process group, pgid = its pid), which is how cancel reaches every
//! process it started. The leader's start time (clock ticks since boot,
//! from /proc) is recorded with the pgid, so a later kill never hits a
//! stranger that reused the number.

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The start time of `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), if it is alive.
pub fn start_time(pid: i32) -> Option<i64> {
    stat_fields(pid).and_then(|f| f.get(19).and_then(|s| s.parse().ok()))
}

/// The process group of `pid` (field 5 of `/proc/PID/stat`).
fn pgrp(pid: i32) -> Option<i32> {
    stat_fields(pid).and_then(|f| f.get(2).and_then(|s| s.parse().ok()))
}

/// The fields of `/proc/PID/stat` after the `(comm)` field, which may itself
/// hold spaces and parentheses: index 0 is the state (field 3).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// The live (not zombie) pids whose process group is `pgid`.
pub fn members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| {
                f.first().map(String::as_str) != Some("Z")
                    && f.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
            })
        })
        .collect()
}

/// Sends `sig` to every process of the group; false if none is left.
pub fn signal_group(pgid: i32, sig: Signal) -> bool {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => {
            tracing::warn!(pgid, error = %e, "cannot signal process group");
            true
        }
    }
}

/// Whether any live process is still in the group. Zombies do not count:
/// they are dead, waiting for a parent (often init) to reap them.
pub fn group_alive(pgid: i32) -> bool {
    if matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH)) {
        return false;
    }
    !members(pgid).is_empty()
}

/// Kills what is left of a recorded group after a crash, if it is still
/// ours: when its leader is alive it must have the recorded start time;
/// when the leader is gone, the remaining members are ours (a pgid cannot
/// be reused while any process is in the group). Returns how many
/// processes were killed.
pub fn kill_orphaned_group(pgid: i32, leader_start: Option<i64>) -> usize {
    if pgid <= 1 {
        return 0;
    }
    if let Some(actual) = start_time(pgid) {
        if pgrp(pgid) != Some(pgid) || leader_start.is_some_and(|s| s != actual) {
            // The number now belongs to someone else.
            return 0;
        }
    }
    let found = members(pgid);
    if found.is_empty() {
        return 0;
    }
    signal_group(pgid, Signal::SIGKILL);
    found.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_session_leader_and_its_children_are_one_group_that_can_be_killed() {
        let mut child = unsafe {
            std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 30 & sleep 30 & wait"])
                .pre_exec(|| {
                    nix::unistd::setsid()
                        .map(|_| ())
                        .map_err(std::io::Error::from)
                })
                .spawn()
                .unwrap()
        };
        let pgid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(200));
        let start = start_time(pgid).expect("alive");
        assert_eq!(members(pgid).len(), 3, "sh and two sleeps");
        assert!(group_alive(pgid));

        // A wrong start time means "not ours": nothing is killed.
        assert_eq!(kill_orphaned_group(pgid, Some(start + 1)), 0);
        assert_eq!(kill_orphaned_group(pgid, Some(start)), 3);
        child.wait().unwrap();
        for _ in 0..250 {
            if !group_alive(pgid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!group_alive(pgid));
    }
}
