//! Session recordings as asciicast v2 files (<https://docs.asciinema.org/manual/asciicast/v2/>):
//! a header line, then one `[seconds, "o", text]` line per output chunk and
//! `[seconds, "r", "COLSxROWS"]` per resize. Input is not recorded (it would
//! hold passwords typed at prompts that do not echo).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub struct Recorder {
    out: BufWriter<File>,
    start: Instant,
    path: PathBuf,
}

/// Whether `name` is a recording's file name as we make them (the session id).
pub fn valid_id(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The file of session `id`'s recording under `dir`.
pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.cast"))
}

impl Recorder {
    pub fn create(
        dir: &Path,
        id: &str,
        cols: u16,
        rows: u16,
        title: &str,
    ) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let path = path_of(dir, id);
        let mut out = BufWriter::new(File::create(&path)?);
        let header = serde_json::json!({
            "version": 2,
            "width": cols,
            "height": rows,
            "timestamp": chrono::Utc::now().timestamp(),
            "title": title,
            "env": {"TERM": "xterm-256color"},
        });
        writeln!(out, "{header}")?;
        Ok(Recorder {
            out,
            start: Instant::now(),
            path,
        })
    }

    fn event(&mut self, code: &str, data: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let line = serde_json::json!([(t * 1e6).round() / 1e6, code, data]);
        if let Err(e) = writeln!(self.out, "{line}") {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot write the terminal recording");
        }
    }

    pub fn output(&mut self, text: &str) {
        self.event("o", text);
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.event("r", &format!("{cols}x{rows}"));
    }

    pub fn finish(mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot finish the terminal recording");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_is_asciicast_v2() {
        let dir = tempfile::tempdir().unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        assert!(valid_id(id));
        assert!(!valid_id("../etc/passwd"));
        let mut r = Recorder::create(dir.path(), id, 80, 24, "alice@web-1").unwrap();
        r.output("hi\r\n");
        r.resize(100, 30);
        r.finish();
        let text = std::fs::read_to_string(path_of(dir.path(), id)).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 80);
        assert_eq!(lines[1][1], "o");
        assert_eq!(lines[1][2], "hi\r\n");
        assert_eq!(lines[2][1], "r");
        assert_eq!(lines[2][2], "100x30");
    }
}
