//! Output hygiene: whatever bytes a job writes, in whatever chunks, every
//! stored line is text without a newline and within the line limit; lines
//! within the limit come out the same however the bytes were chunked, and
//! as a terminal would show them (`\r` overwrites).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use server::engine::output::LineSplitter;

#[derive(Arbitrary, Debug)]
struct Input {
    max_line: u8,
    chunks: Vec<Vec<u8>>,
}

fn split(max: usize, chunks: &[&[u8]]) -> Vec<String> {
    let mut s = LineSplitter::new(max);
    let mut out = Vec::new();
    for c in chunks {
        s.push(c, &mut out);
    }
    s.finish(&mut out);
    out
}

/// What a terminal shows of one line: the text after the last `\r` that
/// something follows, without trailing `\r`s.
fn shown(line: &[u8]) -> String {
    let end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
    let line = &line[..end];
    let start = line.iter().rposition(|&b| b == b'\r').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&line[start..]).into_owned()
}

fuzz_target!(|input: Input| {
    // LineSplitter never goes below 16 bytes.
    let max = usize::from(input.max_line).max(16);
    let chunks: Vec<&[u8]> = input.chunks.iter().map(Vec::as_slice).collect();
    let out = split(max, &chunks);
    for line in &out {
        assert!(
            !line.contains('\n'),
            "a stored line holds a newline: {line:?}"
        );
        // Each line comes from at most `max` bytes (a replaced invalid byte
        // grows to three, so count characters).
        assert!(
            line.chars().count() <= max,
            "{} chars over {max}",
            line.chars().count()
        );
    }

    let all: Vec<u8> = input.chunks.concat();
    let raw_lines: Vec<&[u8]> = all.split(|&b| b == b'\n').collect();
    if raw_lines.iter().all(|l| l.len() <= max) {
        // Nothing was cut: chunking must not matter, and each line is what
        // a terminal shows.
        assert_eq!(out, split(max, &[&all]), "chunking changed the lines");
        let (last, complete) = raw_lines.split_last().expect("split yields one");
        let mut expected: Vec<String> = complete.iter().map(|l| shown(l)).collect();
        if !last.is_empty() {
            expected.push(shown(last));
        }
        assert_eq!(out, expected);
    }
});
