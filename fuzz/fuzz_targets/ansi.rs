//! The ANSI parser: any job output line becomes spans of plain text whose
//! styles can only ever produce safe class names and inline CSS.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let spans = app::ansi::parse(&line);
    let mut rest = line.chars();
    for span in &spans {
        assert!(!span.text.is_empty(), "an empty span");
        for c in span.text.chars() {
            assert!(c == '\t' || !c.is_control(), "control character {c:?} kept");
            // The text is a subsequence of the line: nothing is invented.
            assert!(rest.any(|x| x == c), "{c:?} is not from the line");
        }
        let classes = span.style.classes();
        assert!(
            classes
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == ' '),
            "unsafe class list {classes:?}"
        );
        let css = span.style.inline();
        assert!(safe_inline_css(&css), "unsafe inline CSS {css:?}");
    }
});

/// `color:#rrggbb;` and/or `background-color:#rrggbb;`, nothing else.
fn safe_inline_css(css: &str) -> bool {
    let mut rest = css;
    for prop in ["color:#", "background-color:#"] {
        if let Some(after) = rest.strip_prefix(prop) {
            let hex = after.get(..6).unwrap_or("");
            if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return false;
            }
            let Some(tail) = after[6..].strip_prefix(';') else {
                return false;
            };
            rest = tail;
        }
    }
    rest.is_empty()
}
