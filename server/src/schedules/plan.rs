//! When a schedule fires: the pure part of the scheduler. Given the cron
//! expression, its time zone, the misfire policy, the last fire already
//! decided and the time now, [`plan`] says which fires run now and which
//! were missed. No clock, no database: the unit tests below walk a year in
//! three time zones through it.
//!
//! Daylight saving time is croner's, which follows Vixie cron (and the
//! Open Cron Pattern Specification): a fixed-time schedule (one second,
//! minute and hour, such as `30 2 * * *`) whose time falls into a
//! spring-forward gap fires at the first moment after the gap (03:00), and
//! fires once, at the first 02:30, on a day with two; a schedule with a
//! wildcard or step in its second, minute or hour field fires at every
//! moment whose wall-clock time matches, so it skips nothing real and runs
//! in both passes of a repeated hour.

use std::collections::VecDeque;

use app::model::schedule::Misfire;
use chrono::{DateTime, Duration, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// Missed fires counted one by one, at most: past this (a schedule every
/// second and a day's outage), the count is "at least" this.
pub const COUNT_LIMIT: u64 = 100_000;

/// The first fire strictly after `t`.
pub fn next_after(cron: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&t.with_timezone(&tz), false)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The last fire strictly before `t`.
///
/// N.B.: croner searches from the whole second (it drops the fraction), so
/// from 12:00:58.5 an exclusive search would skip 12:00:58: a time with a
/// fraction searches its whole second inclusively.
fn previous_before(cron: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let whole = t.with_nanosecond(0).unwrap_or(t);
    cron.find_previous_occurrence(&whole.with_timezone(&tz), whole < t)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// The next `n` fires after `t`.
pub fn upcoming(cron: &Cron, tz: Tz, t: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(n);
    let mut at = t;
    while out.len() < n {
        match next_after(cron, tz, at) {
            Some(next) => {
                out.push(next);
                at = next;
            }
            None => break,
        }
    }
    out
}

/// A run of consecutive fires that did not run because they were missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missed {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// How many (at least [`COUNT_LIMIT`] when `exact` is false).
    pub count: u64,
    pub exact: bool,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Missed fires, all older than every fire in `fires`.
    pub missed: Option<Missed>,
    /// The fires to launch now, oldest first.
    pub fires: Vec<DateTime<Utc>>,
}

/// How a schedule treats late fires.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub misfire: Misfire,
    /// With [`Misfire::All`]: the newest this many late fires run.
    pub max_catchup: u32,
    /// A fire at most this late is on time.
    pub grace: Duration,
}

/// The fires due in `(after, now]`: those within `policy.grace` of `now`
/// are on time and run; older ones are late, and the misfire policy says
/// which of them run (`latest`: the newest, unless an on-time fire runs
/// anyway; `all`: the newest `max_catchup`) and which are missed.
pub fn plan(cron: &Cron, tz: Tz, policy: Policy, after: DateTime<Utc>, now: DateTime<Utc>) -> Plan {
    let late_before = now - policy.grace;
    // On-time fires: in [late_before, now], after `after`.
    let mut fires = Vec::new();
    let mut at = after.max(late_before - Duration::nanoseconds(1));
    while let Some(t) = next_after(cron, tz, at).filter(|t| *t <= now) {
        fires.push(t);
        at = t;
    }
    let Some(first_late) = next_after(cron, tz, after).filter(|t| *t < late_before) else {
        return Plan {
            missed: None,
            fires,
        };
    };
    // The newest late fires, newest last: as many as the policy may run,
    // and one more (the newest missed one).
    let keep = match policy.misfire {
        Misfire::Skip => 1,
        Misfire::Latest => 2,
        Misfire::All => policy.max_catchup as usize + 1,
    };
    let mut newest = VecDeque::with_capacity(keep);
    let mut at = late_before;
    while newest.len() < keep {
        match previous_before(cron, tz, at).filter(|t| *t > after) {
            Some(t) => {
                newest.push_front(t);
                at = t;
            }
            None => break,
        }
    }
    let (count, exact) = count_between(cron, tz, after, late_before);
    let run = match policy.misfire {
        Misfire::Skip => 0,
        Misfire::Latest if fires.is_empty() => 1,
        Misfire::Latest => 0,
        Misfire::All => (policy.max_catchup as u64).min(count) as usize,
    };
    let late_runs: Vec<_> = newest.iter().skip(newest.len() - run).copied().collect();
    let missed_count = count - run as u64;
    let missed = (missed_count > 0).then(|| Missed {
        first: first_late,
        last: newest[newest.len() - run - 1],
        count: missed_count,
        exact,
    });
    Plan {
        missed,
        fires: late_runs.into_iter().chain(fires).collect(),
    }
}

/// How many fires lie in `(after, before)`, counted up to [`COUNT_LIMIT`].
fn count_between(cron: &Cron, tz: Tz, after: DateTime<Utc>, before: DateTime<Utc>) -> (u64, bool) {
    let mut n = 0;
    let mut at = after;
    while let Some(t) = next_after(cron, tz, at).filter(|t| *t < before) {
        n += 1;
        if n == COUNT_LIMIT {
            return (n, false);
        }
        at = t;
    }
    (n, true)
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

    use super::*;
    use crate::config::schedule::parse_cron;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn policy(misfire: Misfire, max_catchup: u32, grace_secs: i64) -> Policy {
        Policy {
            misfire,
            max_catchup,
            grace: Duration::seconds(grace_secs),
        }
    }

    /// Every fire of `expr` in `tz` during the year 2027, by the scheduler's
    /// own stepping.
    fn year_of_fires(expr: &str, tz: Tz) -> Vec<DateTime<Utc>> {
        let cron = parse_cron(expr).unwrap();
        let start = tz
            .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let end = tz
            .with_ymd_and_hms(2028, 1, 1, 0, 0, 0)
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        let mut at = start - Duration::seconds(1);
        while let Some(t) = next_after(&cron, tz, at).filter(|t| *t < end) {
            out.push(t);
            at = t;
        }
        out
    }

    /// The expected instant of a daily fixed time on `date` in `tz`, by the
    /// rule the docs state (and independently of croner): the time itself;
    /// on a day with two, the first; on a day without, the first minute
    /// after the gap.
    fn expected_daily(tz: Tz, date: NaiveDate, time: NaiveTime) -> DateTime<Utc> {
        let mut local = NaiveDateTime::new(date, time);
        loop {
            match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => return t.with_timezone(&Utc),
                LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
                LocalResult::None => local += Duration::minutes(1),
            }
        }
    }

    fn days_of_2027() -> impl Iterator<Item = NaiveDate> {
        NaiveDate::from_ymd_opt(2027, 1, 1)
            .unwrap()
            .iter_days()
            .take_while(|d| d.year() == 2027)
    }

    #[test]
    fn a_daily_time_in_the_dst_gap_and_overlap_fires_once_every_day_for_a_year() {
        // 02:30 falls into Berlin's and Sydney's spring gaps and their
        // autumn overlaps; 01:30 into New York's overlap, 02:30 into its gap.
        let cases = [
            ("Europe/Berlin", "30 2 * * *", (2, 30)),
            ("America/New_York", "30 2 * * *", (2, 30)),
            ("America/New_York", "0 30 1 * * *", (1, 30)),
            ("Australia/Sydney", "30 2 * * *", (2, 30)),
        ];
        for (zone, expr, (h, m)) in cases {
            let tz: Tz = zone.parse().unwrap();
            let time = NaiveTime::from_hms_opt(h, m, 0).unwrap();
            let expected: Vec<_> = days_of_2027()
                .map(|d| expected_daily(tz, d, time))
                .collect();
            let got = year_of_fires(expr, tz);
            assert_eq!(got.len(), 365, "{zone} {expr}: one fire a day");
            for (g, e) in got.iter().zip(&expected) {
                assert_eq!(g, e, "{zone} {expr}: fire on {}", e.with_timezone(&tz));
            }
        }
        // The days that matter, spelled out: Berlin's gap (28 March 2027,
        // 02:00 → 03:00 CEST) moves the fire to 03:00 CEST = 01:00 UTC;
        // its overlap (31 October, 03:00 CEST → 02:00 CET) fires at the
        // first 02:30, in CEST = 00:30 UTC.
        let berlin = year_of_fires("30 2 * * *", "Europe/Berlin".parse().unwrap());
        assert!(berlin.contains(&utc("2027-03-28T01:00:00Z")));
        assert!(berlin.contains(&utc("2027-10-31T00:30:00Z")));
        assert!(!berlin.contains(&utc("2027-10-31T01:30:00Z")));
        // New York at 01:30 on 7 November 2027 (EDT → EST): the EDT one.
        let ny = year_of_fires("0 30 1 * * *", "America/New_York".parse().unwrap());
        assert!(ny.contains(&utc("2027-11-07T05:30:00Z")));
        assert!(!ny.contains(&utc("2027-11-07T06:30:00Z")));
    }

    #[test]
    fn interval_schedules_follow_real_time_through_dst_in_three_zones() {
        // Every 15 minutes, and hourly at :30: whole-hour offsets, so every
        // real quarter hour (resp. every real hour at :30 UTC) is a fire, none
        // is lost in a gap and the repeated hour runs twice.
        for zone in ["Europe/Berlin", "America/New_York", "Australia/Sydney"] {
            let tz: Tz = zone.parse().unwrap();
            let quarter = year_of_fires("*/15 * * * *", tz);
            let hours = year_of_fires("30 * * * *", tz);
            let start = tz
                .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .unwrap()
                .with_timezone(&Utc);
            let quarters: Vec<_> = (0..365 * 96)
                .map(|i| start + Duration::minutes(15 * i))
                .collect();
            assert_eq!(quarter, quarters, "{zone}: every real quarter hour");
            let halves: Vec<_> = (0..365 * 24)
                .map(|i| start + Duration::minutes(30 + 60 * i))
                .collect();
            assert_eq!(hours, halves, "{zone}: every real hour at :30");
            // The local day of the spring change has 23 of them, of the
            // autumn change 25.
            let per_day = |d: NaiveDate| {
                hours
                    .iter()
                    .filter(|t| t.with_timezone(&tz).date_naive() == d)
                    .count()
            };
            let counts: Vec<usize> = days_of_2027().map(per_day).collect();
            assert_eq!(counts.iter().filter(|&&c| c == 23).count(), 1, "{zone}");
            assert_eq!(counts.iter().filter(|&&c| c == 25).count(), 1, "{zone}");
            assert_eq!(counts.iter().filter(|&&c| c == 24).count(), 363, "{zone}");
        }
    }

    #[test]
    fn weekly_and_seconds_schedules() {
        let tz: Tz = "America/New_York".parse().unwrap();
        let mondays = year_of_fires("0 9 * * MON", tz);
        assert_eq!(mondays.len(), 52);
        for t in &mondays {
            let local = t.with_timezone(&tz);
            assert_eq!(local.weekday(), chrono::Weekday::Mon);
            assert_eq!((local.hour(), local.minute(), local.second()), (9, 0, 0));
        }
        let cron = parse_cron("*/10 * * * * *").unwrap();
        let at = utc("2027-05-01T12:00:03.5Z");
        assert_eq!(
            upcoming(&cron, Tz::UTC, at, 3),
            vec![
                utc("2027-05-01T12:00:10Z"),
                utc("2027-05-01T12:00:20Z"),
                utc("2027-05-01T12:00:30Z")
            ]
        );
    }

    #[test]
    fn on_time_fires_run_and_nothing_is_missed() {
        let cron = parse_cron("* * * * * *").unwrap();
        let p = plan(
            &cron,
            Tz::UTC,
            policy(Misfire::Skip, 10, 2),
            utc("2027-01-01T00:00:10Z"),
            utc("2027-01-01T00:00:12.2Z"),
        );
        assert_eq!(p.missed, None);
        assert_eq!(
            p.fires,
            vec![utc("2027-01-01T00:00:11Z"), utc("2027-01-01T00:00:12Z")]
        );
        // Nothing due yet.
        let p = plan(
            &cron,
            Tz::UTC,
            policy(Misfire::Skip, 10, 2),
            utc("2027-01-01T00:00:12Z"),
            utc("2027-01-01T00:00:12.9Z"),
        );
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn misfire_policies_after_an_outage() {
        // Down from 00:00:10 to 00:01:00.5, a fire every second, grace 2 s:
        // 11..=58 are late (48 fires), 59 and 60 are on time.
        let cron = parse_cron("* * * * * *").unwrap();
        let after = utc("2027-01-01T00:00:10Z");
        let now = utc("2027-01-01T00:01:00.5Z");
        let sec = |s: i64| after + Duration::seconds(s - 10);
        let on_time = vec![sec(59), sec(60)];

        let skip = plan(&cron, Tz::UTC, policy(Misfire::Skip, 10, 2), after, now);
        assert_eq!(
            skip.missed,
            Some(Missed {
                first: sec(11),
                last: sec(58),
                count: 48,
                exact: true
            })
        );
        assert_eq!(skip.fires, on_time);

        // An on-time fire runs anyway: `latest` runs no late one.
        let latest = plan(&cron, Tz::UTC, policy(Misfire::Latest, 10, 2), after, now);
        assert_eq!(latest.missed.as_ref().unwrap().count, 48);
        assert_eq!(latest.fires, on_time);

        let all = plan(&cron, Tz::UTC, policy(Misfire::All, 5, 2), after, now);
        assert_eq!(
            all.missed,
            Some(Missed {
                first: sec(11),
                last: sec(53),
                count: 43,
                exact: true
            })
        );
        assert_eq!(
            all.fires,
            vec![
                sec(54),
                sec(55),
                sec(56),
                sec(57),
                sec(58),
                sec(59),
                sec(60)
            ]
        );

        let all_of_few = plan(&cron, Tz::UTC, policy(Misfire::All, 100, 2), after, now);
        assert_eq!(all_of_few.missed, None);
        assert_eq!(all_of_few.fires.len(), 50);
    }

    #[test]
    fn latest_runs_the_newest_late_fire_when_none_is_on_time() {
        // Nightly at 02:30; down from the evening of the 1st to the
        // morning of the 4th: the 2nd, 3rd and 4th were missed.
        let cron = parse_cron("30 2 * * *").unwrap();
        let after = utc("2027-01-01T02:30:00Z");
        let now = utc("2027-01-04T08:00:00Z");
        let p = plan(&cron, Tz::UTC, policy(Misfire::Latest, 10, 60), after, now);
        assert_eq!(p.fires, vec![utc("2027-01-04T02:30:00Z")]);
        assert_eq!(
            p.missed,
            Some(Missed {
                first: utc("2027-01-02T02:30:00Z"),
                last: utc("2027-01-03T02:30:00Z"),
                count: 2,
                exact: true
            })
        );
        // One missed night alone: it runs, nothing is missed.
        let p = plan(
            &cron,
            Tz::UTC,
            policy(Misfire::Latest, 10, 60),
            after,
            utc("2027-01-02T09:00:00Z"),
        );
        assert_eq!(p.fires, vec![utc("2027-01-02T02:30:00Z")]);
        assert_eq!(p.missed, None);
        let p = plan(
            &cron,
            Tz::UTC,
            policy(Misfire::Skip, 10, 60),
            after,
            utc("2027-01-02T09:00:00Z"),
        );
        assert!(p.fires.is_empty());
        assert_eq!(p.missed.unwrap().count, 1);
    }

    #[test]
    fn a_long_outage_is_counted_up_to_the_limit() {
        let cron = parse_cron("* * * * * *").unwrap();
        let after = utc("2027-01-01T00:00:00Z");
        let now = utc("2027-01-03T00:00:00Z");
        let p = plan(&cron, Tz::UTC, policy(Misfire::Latest, 10, 1), after, now);
        let missed = p.missed.unwrap();
        assert_eq!((missed.count, missed.exact), (COUNT_LIMIT, false));
        assert_eq!(missed.first, utc("2027-01-01T00:00:01Z"));
        assert_eq!(
            p.fires,
            vec![
                utc("2027-01-03T00:00:00Z") - Duration::seconds(1),
                utc("2027-01-03T00:00:00Z")
            ]
        );
    }
}
