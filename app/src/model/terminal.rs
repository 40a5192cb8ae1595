//! The terminal WebSocket's frames (DESIGN.md, "Terminal (WebSocket)"), one
//! JSON object per text message, shared by the server and the console page.

use serde::{Deserialize, Serialize};

/// Browser → server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Keystrokes or pasted text, as xterm.js reports them.
    Input { data: String },
    /// The terminal's size in character cells.
    Resize { cols: u16, rows: u16 },
}

/// Server → browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The first frame: the session's id (send it back as `?session=` to
    /// reattach after a drop) and whether this connection reattached to a
    /// running shell, whose recent output follows as `output`.
    Session { id: String, resumed: bool },
    /// Output of the shell, always whole UTF-8 characters.
    Output { data: String },
    /// The shell ended with this code (128 + n when killed by signal n);
    /// the server closes the socket after it.
    Exit { code: i32 },
    /// The server ended the session (idle timeout, taken over by another
    /// tab, shutting down); the socket closes after it.
    Closed { reason: String },
}

/// The smallest and largest window the server accepts.
pub const MIN_SIZE: u16 = 2;
pub const MAX_SIZE: u16 = 1000;

/// Whether `cols` x `rows` is a window size the server accepts.
pub fn valid_size(cols: u16, rows: u16) -> bool {
    (MIN_SIZE..=MAX_SIZE).contains(&cols) && (MIN_SIZE..=MAX_SIZE).contains(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_designed_shape() {
        let input: ClientFrame = serde_json::from_str(r#"{"type":"input","data":"ls\r"}"#).unwrap();
        assert_eq!(
            input,
            ClientFrame::Input {
                data: "ls\r".into()
            }
        );
        let resize: ClientFrame =
            serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(
            resize,
            ClientFrame::Resize {
                cols: 120,
                rows: 40
            }
        );
        assert_eq!(
            serde_json::to_string(&ServerFrame::Output { data: "a\n".into() }).unwrap(),
            r#"{"type":"output","data":"a\n"}"#
        );
        assert_eq!(
            serde_json::to_string(&ServerFrame::Exit { code: 3 }).unwrap(),
            r#"{"type":"exit","code":3}"#
        );
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(valid_size(80, 24));
        assert!(!valid_size(0, 24));
        assert!(!valid_size(80, 5000));
    }
}
