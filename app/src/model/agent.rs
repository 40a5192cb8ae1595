//! The agent protocol: what an `opsdeck agent` on another host and the
//! server say to each other over the agent's one outbound WebSocket
//! (`GET /api/agent`). One typed envelope per direction, serde-tagged by
//! `type`, used by both ends (the same binary).
//!
//! A job on an agent is a *dispatch*: the server sends `command.run` with
//! the job's id and its dispatch number; every message about that job
//! carries both, and one about a dispatch that is no longer the job's
//! current one is refused, so a late or forged message can never change a
//! job twice. The agent numbers the job's lines (the same head-and-tail
//! rule as a local job) and keeps every batch the server has not
//! acknowledged; the server stores each batch idempotently by
//! `(job_id, seq)` and acknowledges only what it committed.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::job::{Gap, JobState, LogLine};
use crate::model::status::ProbeState;

/// The protocol version this build speaks.
pub const PROTOCOL: u32 = 2;
/// Every version a server of this build accepts. Version 2 added status
/// probes (`command.probe`, `probe.result`); a server does not send them
/// to an agent that said 1, and records the target's state as unknown
/// with the reason.
pub const PROTOCOLS: &[u32] = &[1, PROTOCOL];
/// The first version that runs status probes.
pub const PROBES_SINCE: u32 = 2;

/// A job the agent reports in its `hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldJob {
    pub job_id: i64,
    pub dispatch: i64,
    /// Whether its process still runs under this agent (false after the
    /// agent restarted: it only holds spooled lines and the end).
    pub running: bool,
}

/// One batch of a job's log as the agent numbered it, applied by the
/// server like a local log writer's commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogBatch {
    /// On the wire column by column ([`columns`]); the rows of protocol 1
    /// (an object per line) are read too.
    #[serde(with = "columns")]
    pub lines: Vec<LogLine>,
    /// Seqs `[from, to)` pushed out of a capped log's tail: delete them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<(i64, i64)>,
    /// The cut marker's final text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marker: Option<(i64, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<Gap>,
    /// The last seq numbered so far (the batch's last line, or earlier).
    pub last_seq: i64,
    /// Bytes stored once this batch is (head, marker and tail).
    pub stored_bytes: i64,
}

/// A `log` batch's lines as columns: `{"from": first seq, "stream":
/// "ooes…" (stdout, stderr, system), "ms": [first time in ms since the
/// epoch, then each line's difference from the one before], "text": [...]}`,
/// plus `"seq": [...]` only when the seqs do not run on from `from`.
///
/// N.B.: an object per line with an RFC 3339 time cost the agent and the
/// server more than the lines' own text (formatting and parsing a time,
/// four keys per line): the agent's ingest rate was 73 % of a local job's.
/// Times are stored in milliseconds, so nothing is lost.
pub mod columns {
    use std::fmt;

    use chrono::{DateTime, TimeZone, Utc};
    use serde::de::{self, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::model::job::{LogLine, LogStream};

    #[derive(Serialize)]
    struct Out<'a> {
        from: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<Vec<i64>>,
        stream: String,
        ms: Vec<i64>,
        text: Vec<&'a str>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        from: i64,
        #[serde(default)]
        seq: Option<Vec<i64>>,
        stream: String,
        ms: Vec<i64>,
        text: Vec<String>,
    }

    fn code(stream: LogStream) -> char {
        match stream {
            LogStream::Stdout => 'o',
            LogStream::Stderr => 'e',
            LogStream::System => 's',
        }
    }

    pub fn serialize<S: Serializer>(lines: &[LogLine], s: S) -> Result<S::Ok, S::Error> {
        let Some(first) = lines.first() else {
            return s.collect_seq(std::iter::empty::<LogLine>());
        };
        let runs_on = lines
            .iter()
            .enumerate()
            .all(|(i, l)| l.seq == first.seq + i as i64);
        let mut before = 0;
        let ms = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let t = l.ts.timestamp_millis();
                let d = if i == 0 { t } else { t - before };
                before = t;
                d
            })
            .collect();
        Out {
            from: first.seq,
            seq: (!runs_on).then(|| lines.iter().map(|l| l.seq).collect()),
            stream: lines.iter().map(|l| code(l.stream)).collect(),
            ms,
            text: lines.iter().map(|l| l.text.as_str()).collect(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<LogLine>, D::Error> {
        d.deserialize_any(Lines)
    }

    struct Lines;

    impl<'de> Visitor<'de> for Lines {
        type Value = Vec<LogLine>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a batch's lines: columns, or a list of lines")
        }

        /// Protocol 1: a list of lines.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut lines = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(line) = seq.next_element::<LogLine>()? {
                lines.push(line);
            }
            Ok(lines)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            let c = In::deserialize(de::value::MapAccessDeserializer::new(map))?;
            let n = c.text.len();
            if c.ms.len() != n
                || c.stream.len() != n
                || c.seq.as_ref().is_some_and(|s| s.len() != n)
            {
                return Err(de::Error::custom(format!(
                    "the columns of {n} lines differ in length (stream {}, ms {})",
                    c.stream.len(),
                    c.ms.len()
                )));
            }
            let mut t = 0i64;
            let mut lines = Vec::with_capacity(n);
            let streams = c.stream.bytes();
            for (i, ((text, d), code)) in c.text.into_iter().zip(c.ms).zip(streams).enumerate() {
                t = if i == 0 { d } else { t.saturating_add(d) };
                let stream = match code {
                    b'o' => LogStream::Stdout,
                    b'e' => LogStream::Stderr,
                    b's' => LogStream::System,
                    other => {
                        return Err(de::Error::custom(format!(
                            "line {i}: no stream is coded `{}`",
                            other as char
                        )))
                    }
                };
                let ts: DateTime<Utc> = Utc
                    .timestamp_millis_opt(t)
                    .single()
                    .ok_or_else(|| de::Error::custom(format!("line {i}: no such time: {t} ms")))?;
                let seq = match &c.seq {
                    Some(seqs) => seqs[i],
                    None => c.from + i as i64,
                };
                lines.push(LogLine {
                    seq,
                    stream,
                    ts,
                    text,
                });
            }
            Ok(lines)
        }
    }
}

/// How a job ended on the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ended {
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    pub warnings: bool,
    /// Why it failed, if it did (an agent older than retries sends none:
    /// the server takes a failure without one as `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<crate::model::retry::Failure>,
}

/// What the server asks an agent to run: a template's argv, already
/// built and validated by the server; the agent runs nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCommand {
    pub job_id: i64,
    pub dispatch: i64,
    pub template: String,
    pub argv: Vec<String>,
    /// The job's own variables (the agent adds its base variables).
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub opening: String,
    pub timeout_secs: Option<u64>,
    pub kill_grace_secs: u64,
    pub max_line_bytes: usize,
    pub max_log_bytes: u64,
    pub tail_lines: usize,
    pub warning_exit_codes: Vec<i32>,
    /// The last seq already stored (0 for a fresh job).
    pub after_seq: i64,
}

/// A target's status probe, run on the agent's host like a job (its own
/// process group, exactly this environment and the agent's base
/// variables, killed with its group past the timeout), answered by
/// `probe.result` with the same `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCommand {
    /// Unique among the probes the server awaits.
    pub id: u64,
    pub target: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout_ms: u64,
}

/// A terminal on the agent's host: the server relays the browser's
/// terminal to it. Output goes over a WebSocket of its own
/// (`GET /api/agent/terminal/{session}`), so a busy terminal never holds
/// up log lines, and the reverse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalOpen {
    pub session: String,
    pub argv: Vec<String>,
    pub cols: u16,
    pub rows: u16,
}

/// Server → agent on a terminal's own socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayIn {
    /// What the browser typed.
    Input {
        data: String,
    },
    Resize {
        cols: u16,
        rows: u16,
    },
    /// The session is over (grace expired, idle, shut down): hang up the
    /// shell, as a closed terminal does.
    Hangup,
}

/// Agent → server on a terminal's own socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RelayOut {
    /// The shell's output, whole UTF-8 characters.
    Output { data: String },
    /// The shell ended with this code (128 + n when killed by signal n).
    Exit { code: i32 },
}

/// Agent → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AgentMsg {
    /// First message of every connection.
    #[serde(rename = "hello")]
    Hello {
        protocol: u32,
        version: String,
        hostname: String,
        /// The jobs it holds (running, or ended with lines not yet acked).
        jobs: Vec<HeldJob>,
    },
    #[serde(rename = "job.started")]
    JobStarted {
        job_id: i64,
        dispatch: i64,
        pid: i32,
        /// The process group leader's start time (clock ticks since boot).
        start_time: i64,
    },
    #[serde(rename = "log")]
    Log {
        job_id: i64,
        dispatch: i64,
        batch: LogBatch,
    },
    /// Sent after every line of the job was sent.
    #[serde(rename = "job.finished")]
    JobFinished {
        job_id: i64,
        dispatch: i64,
        ended: Ended,
        /// The job's last seq (its summary line).
        last_seq: i64,
    },
    #[serde(rename = "heartbeat")]
    Heartbeat { at: DateTime<Utc> },
    /// A terminal the server asked for could not start.
    #[serde(rename = "terminal.failed")]
    TerminalFailed { session: String, error: String },
    /// What a `command.probe` found (protocol 2).
    #[serde(rename = "probe.result")]
    ProbeResult {
        id: u64,
        state: ProbeState,
        /// The first line of its output, or why it could not run.
        message: String,
    },
}

/// Server → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerMsg {
    /// The hello was accepted.
    #[serde(rename = "welcome")]
    Welcome {
        agent: String,
        protocol: u32,
        /// How often the agent should send a heartbeat.
        heartbeat_secs: u64,
    },
    /// The connection is refused or ended; the agent logs `reason`.
    #[serde(rename = "refused")]
    Refused { reason: String },
    #[serde(rename = "command.run")]
    Run(RunCommand),
    #[serde(rename = "command.cancel")]
    Cancel {
        job_id: i64,
        dispatch: i64,
        by: String,
    },
    /// Everything up to `seq` of this dispatch is committed; `done`: the
    /// end too, so the agent may forget the job.
    #[serde(rename = "ack")]
    Ack {
        job_id: i64,
        dispatch: i64,
        seq: i64,
        done: bool,
    },
    /// A held job the server no longer expects from this agent (it ended
    /// elsewhere, or was failed as lost): kill what is left, drop it.
    #[serde(rename = "command.forget")]
    Forget {
        job_id: i64,
        dispatch: i64,
        reason: String,
    },
    #[serde(rename = "heartbeat")]
    Heartbeat { at: DateTime<Utc> },
    #[serde(rename = "terminal.open")]
    TerminalOpen(TerminalOpen),
    /// Run a target's status probe (protocol 2).
    #[serde(rename = "command.probe")]
    Probe(ProbeCommand),
}

/// Whether an agent can be reached, as its pages show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Connected and heard from lately.
    Online,
    /// Connected, but silent past `[agents].unreachable_after`.
    Unreachable,
    /// Not connected.
    Offline,
    /// Its token was revoked.
    Revoked,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Unreachable => "unreachable",
            AgentStatus::Offline => "offline",
            AgentStatus::Revoked => "revoked",
        }
    }
}

/// An enrolled agent, as the Agents page and the job pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub name: String,
    pub status: AgentStatus,
    pub hostname: Option<String>,
    pub version: Option<String>,
    /// Since when it is connected (while it is).
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub connected_since: Option<DateTime<Utc>>,
    /// When it was last heard from (a heartbeat or any message).
    #[cfg_attr(
        feature = "hydrate",
        serde(default, deserialize_with = "crate::model::time::de::option")
    )]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Its jobs that are running or cancelling.
    pub running_jobs: u64,
    /// The configured targets reached through it.
    pub targets: Vec<String>,
    #[cfg_attr(
        feature = "hydrate",
        serde(deserialize_with = "crate::model::time::de::one")
    )]
    pub created_at: DateTime<Utc>,
}

/// A new agent's enrolment: its token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAgent {
    pub info: AgentInfo,
    /// `oda_…`: give it to the agent (`--token-file`); only its hash is kept.
    pub token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: i64, stream: crate::model::job::LogStream, ms: i64, text: &str) -> LogLine {
        use chrono::TimeZone;
        LogLine {
            seq,
            stream,
            ts: Utc.timestamp_millis_opt(ms).unwrap(),
            text: text.into(),
        }
    }

    fn batch(lines: Vec<LogLine>) -> LogBatch {
        LogBatch {
            last_seq: lines.last().map_or(0, |l| l.seq),
            lines,
            delete: None,
            marker: None,
            gap: None,
            stored_bytes: 0,
        }
    }

    #[test]
    fn a_batchs_lines_go_as_columns_and_come_back_the_same() {
        use crate::model::job::LogStream::*;
        let t = 1_796_000_000_123;
        let runs_on = batch(vec![
            line(41, Stdout, t, "one \"quoted\" line"),
            line(42, Stderr, t, ""),
            line(43, Stdout, t + 7, "ünïcode ✓"),
            line(44, System, t - 2, "exited with code 0"),
        ]);
        let v = serde_json::to_value(&runs_on).unwrap();
        assert_eq!(v["lines"]["from"], 41);
        assert_eq!(v["lines"]["stream"], "oeos");
        assert_eq!(v["lines"]["ms"], serde_json::json!([t, 0, 7, -9]));
        assert!(v["lines"].get("seq").is_none(), "{v}");
        let back: LogBatch = serde_json::from_value(v).unwrap();
        assert_eq!(back, runs_on);

        // Seqs with a hole (a capped log's head and tail) go as they are.
        let holed = batch(vec![line(3, Stdout, t, "a"), line(90, Stdout, t, "b")]);
        let v = serde_json::to_value(&holed).unwrap();
        assert_eq!(v["lines"]["seq"], serde_json::json!([3, 90]));
        assert_eq!(serde_json::from_value::<LogBatch>(v).unwrap(), holed);

        let empty = batch(vec![]);
        let v = serde_json::to_value(&empty).unwrap();
        assert_eq!(v["lines"], serde_json::json!([]));
        assert_eq!(serde_json::from_value::<LogBatch>(v).unwrap(), empty);
    }

    #[test]
    fn protocol_1_rows_are_read_and_bad_columns_are_refused() {
        use crate::model::job::LogStream::*;
        let rows = r#"{"lines":[{"seq":5,"stream":"stderr","ts":"2026-12-05T10:00:00.250Z","text":"x"}],"last_seq":5,"stored_bytes":1}"#;
        let b: LogBatch = serde_json::from_str(rows).unwrap();
        assert_eq!(b.lines, [line(5, Stderr, 1_796_464_800_250, "x")]);

        let short = r#"{"lines":{"from":1,"stream":"oo","ms":[1],"text":["a","b"]},"last_seq":2,"stored_bytes":2}"#;
        let e = serde_json::from_str::<LogBatch>(short)
            .unwrap_err()
            .to_string();
        assert!(e.contains("differ in length"), "{e}");
        let odd = r#"{"lines":{"from":1,"stream":"x","ms":[1],"text":["a"]},"last_seq":1,"stored_bytes":1}"#;
        let e = serde_json::from_str::<LogBatch>(odd)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no stream is coded `x`"), "{e}");
    }

    #[test]
    fn envelopes_carry_the_names_of_the_protocol() {
        let hello = AgentMsg::Hello {
            protocol: PROTOCOL,
            version: "0.1.0".into(),
            hostname: "web-1".into(),
            jobs: vec![],
        };
        let v = serde_json::to_value(&hello).unwrap();
        assert_eq!(v["type"], "hello");
        let cancel = ServerMsg::Cancel {
            job_id: 4,
            dispatch: 2,
            by: "alice".into(),
        };
        assert_eq!(
            serde_json::to_value(&cancel).unwrap()["type"],
            "command.cancel"
        );
        let back: ServerMsg =
            serde_json::from_value(serde_json::to_value(&cancel).unwrap()).unwrap();
        assert_eq!(back, cancel);
        let probe = ServerMsg::Probe(ProbeCommand {
            id: 7,
            target: "db-1".into(),
            argv: vec!["systemctl".into(), "is-active".into(), "postgresql".into()],
            env: vec![("OPSDECK_TARGET".into(), "db-1".into())],
            timeout_ms: 10_000,
        });
        let v = serde_json::to_value(&probe).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["id"].as_u64()),
            (Some("command.probe"), Some(7))
        );
        let found: AgentMsg = serde_json::from_str(
            r#"{"type":"probe.result","id":7,"state":"up","message":"active"}"#,
        )
        .unwrap();
        assert_eq!(
            found,
            AgentMsg::ProbeResult {
                id: 7,
                state: ProbeState::Up,
                message: "active".into()
            }
        );
        let bad = serde_json::from_str::<AgentMsg>(r#"{"type":"job.exploded"}"#);
        assert!(bad.is_err());
    }
}
