//! Progress reported in a job's output, per the template's `progress`:
//! - `json`: restic-style `--json` status lines
//!   (`{"message_type":"status","percent_done":0.37,"bytes_done":…,"total_bytes":…}`);
//! - `marker`: lines `::progress 45 copying files`.

use app::model::job::{human_bytes, Progress};
use app::model::template::ProgressKind;
use app::model::time::format_duration_secs;
use serde_json::Value;

/// The progress a line reports, if it reports any.
pub fn parse(kind: ProgressKind, line: &str) -> Option<Progress> {
    match kind {
        ProgressKind::None => None,
        ProgressKind::Marker => parse_marker(line),
        ProgressKind::Json => parse_json(line),
    }
}

fn parse_marker(line: &str) -> Option<Progress> {
    let rest = line.trim_start().strip_prefix("::progress")?;
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim();
    let (num, msg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent = num
        .trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| p.is_finite())?;
    let msg = msg.trim();
    Some(Progress {
        percent: Some(percent.clamp(0.0, 100.0)),
        message: (!msg.is_empty()).then(|| msg.to_string()),
    })
}

fn parse_json(line: &str) -> Option<Progress> {
    let line = line.trim();
    if !line.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    let num = |k: &str| v.get(k).and_then(Value::as_f64);
    match v.get("message_type")?.as_str()? {
        "status" => {
            let percent = num("percent_done").map(|p| (p * 100.0).clamp(0.0, 100.0));
            let mut parts = Vec::new();
            if let (Some(done), Some(total)) = (num("bytes_done"), num("total_bytes")) {
                parts.push(format!(
                    "{} of {}",
                    human_bytes(done as u64),
                    human_bytes(total as u64)
                ));
            }
            if let (Some(done), Some(total)) = (num("files_done"), num("total_files")) {
                parts.push(format!("{} of {} files", done as u64, total as u64));
            }
            if let Some(left) = num("seconds_remaining").filter(|s| *s > 0.0) {
                parts.push(format!("{} left", format_duration_secs(left as i64)));
            }
            Some(Progress {
                percent,
                message: (!parts.is_empty()).then(|| parts.join(" · ")),
            })
        }
        "summary" => {
            let mut msg = "done".to_string();
            if let Some(files) = num("total_files_processed") {
                msg.push_str(&format!(": {} files", files as u64));
            }
            if let Some(added) = num("data_added") {
                msg.push_str(&format!(", {} added", human_bytes(added as u64)));
            }
            Some(Progress {
                percent: Some(100.0),
                message: Some(msg),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_give_percent_and_message() {
        let p = parse(ProgressKind::Marker, "::progress 45 copying files").unwrap();
        assert_eq!(p.percent, Some(45.0));
        assert_eq!(p.message.as_deref(), Some("copying files"));
        assert_eq!(
            parse(ProgressKind::Marker, "::progress 12.5%")
                .unwrap()
                .percent,
            Some(12.5)
        );
        assert_eq!(
            parse(ProgressKind::Marker, "::progress 150 over")
                .unwrap()
                .percent,
            Some(100.0)
        );
        assert!(parse(ProgressKind::Marker, "::progressive 5").is_none());
        assert!(parse(ProgressKind::Marker, "::progress soon").is_none());
        assert!(parse(ProgressKind::None, "::progress 5").is_none());
    }

    #[test]
    fn restic_status_lines_give_bytes_files_and_time_left() {
        let line = r#"{"message_type":"status","seconds_elapsed":3,"seconds_remaining":130,"percent_done":0.375,"total_files":1842,"files_done":690,"total_bytes":3435973836,"bytes_done":1288490188}"#;
        let p = parse(ProgressKind::Json, line).unwrap();
        assert_eq!(p.percent, Some(37.5));
        assert_eq!(
            p.message.as_deref(),
            Some("1.2 GiB of 3.2 GiB · 690 of 1842 files · 2m 10s left")
        );
        let summary =
            r#"{"message_type":"summary","total_files_processed":1842,"data_added":3435973836}"#;
        let p = parse(ProgressKind::Json, summary).unwrap();
        assert_eq!(p.percent, Some(100.0));
        assert_eq!(
            p.message.as_deref(),
            Some("done: 1842 files, 3.2 GiB added")
        );
        assert!(parse(ProgressKind::Json, "not json").is_none());
        assert!(parse(ProgressKind::Json, r#"{"message_type":"verbose_status"}"#).is_none());
    }
}
