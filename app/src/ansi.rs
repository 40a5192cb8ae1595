//! ANSI escape sequences in job output: SGR colours and styles become styled
//! spans; every other escape sequence (cursor moves, titles, …) and control
//! character is dropped. The result is always text, never HTML.

/// A colour: the 16 basic ones, the 256-colour palette, or RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    /// 0–7 normal, 8–15 bright.
    Basic(u8),
    Indexed(u8),
    Rgb(u8, u8, u8),
}

/// The SGR state of a run of text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    pub fg: Option<Color>,
    pub bg: Option<Color>,
    pub bold: bool,
    pub dim: bool,
    pub italic: bool,
    pub underline: bool,
    pub inverse: bool,
}

impl Style {
    pub fn is_plain(&self) -> bool {
        *self == Style::default()
    }

    /// CSS classes for the basic colours and attributes.
    pub fn classes(&self) -> String {
        let mut c = Vec::new();
        let (fg, bg) = if self.inverse {
            (self.bg, self.fg)
        } else {
            (self.fg, self.bg)
        };
        if let Some(Color::Basic(n)) = fg {
            c.push(format!("ansi-fg{n}"));
        }
        if let Some(Color::Basic(n)) = bg {
            c.push(format!("ansi-bg{n}"));
        }
        if self.inverse && fg.is_none() {
            c.push("ansi-inverse".to_string());
        }
        for (on, name) in [
            (self.bold, "ansi-bold"),
            (self.dim, "ansi-dim"),
            (self.italic, "ansi-italic"),
            (self.underline, "ansi-underline"),
        ] {
            if on {
                c.push(name.to_string());
            }
        }
        c.join(" ")
    }

    /// Inline CSS for 256-colour and RGB colours.
    pub fn inline(&self) -> String {
        let (fg, bg) = if self.inverse {
            (self.bg, self.fg)
        } else {
            (self.fg, self.bg)
        };
        let mut s = String::new();
        if let Some(css) = fg.and_then(css_color) {
            s.push_str(&format!("color:{css};"));
        }
        if let Some(css) = bg.and_then(css_color) {
            s.push_str(&format!("background-color:{css};"));
        }
        s
    }
}

/// CSS for a non-basic colour.
fn css_color(c: Color) -> Option<String> {
    match c {
        Color::Basic(_) => None,
        Color::Rgb(r, g, b) => Some(format!("#{r:02x}{g:02x}{b:02x}")),
        Color::Indexed(n) if n < 16 => None,
        Color::Indexed(n) if n >= 232 => {
            let v = 8 + (n - 232) * 10;
            Some(format!("#{v:02x}{v:02x}{v:02x}"))
        }
        Color::Indexed(n) => {
            let n = n - 16;
            let level = |x: u8| if x == 0 { 0 } else { 55 + x * 40 };
            Some(format!(
                "#{:02x}{:02x}{:02x}",
                level(n / 36),
                level((n / 6) % 6),
                level(n % 6)
            ))
        }
    }
}

/// A run of text in one style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub text: String,
    pub style: Style,
}

/// Splits a line into styled spans.
pub fn parse(line: &str) -> Vec<Span> {
    let mut spans: Vec<Span> = Vec::new();
    let mut style = Style::default();
    let mut text = String::new();
    let mut chars = line.chars().peekable();
    let flush = |text: &mut String, style: Style, spans: &mut Vec<Span>| {
        if !text.is_empty() {
            spans.push(Span {
                text: std::mem::take(text),
                style,
            });
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.peek() {
                Some('[') => {
                    chars.next();
                    let mut params = String::new();
                    let mut fin = None;
                    for c in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&c) {
                            fin = Some(c);
                            break;
                        }
                        params.push(c);
                    }
                    if fin == Some('m') {
                        flush(&mut text, style, &mut spans);
                        apply_sgr(&mut style, &params);
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC \.
                    chars.next();
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next();
                }
                None => {}
            },
            '\t' => text.push('\t'),
            c if c.is_control() => {}
            c => text.push(c),
        }
    }
    flush(&mut text, style, &mut spans);
    spans
}

fn apply_sgr(style: &mut Style, params: &str) {
    let nums: Vec<u16> = if params.is_empty() {
        vec![0]
    } else {
        params
            .split([';', ':'])
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    let mut i = 0;
    while i < nums.len() {
        match nums[i] {
            0 => *style = Style::default(),
            1 => style.bold = true,
            2 => style.dim = true,
            3 => style.italic = true,
            4 => style.underline = true,
            7 => style.inverse = true,
            22 => {
                style.bold = false;
                style.dim = false;
            }
            23 => style.italic = false,
            24 => style.underline = false,
            27 => style.inverse = false,
            n @ 30..=37 => style.fg = Some(Color::Basic((n - 30) as u8)),
            39 => style.fg = None,
            n @ 40..=47 => style.bg = Some(Color::Basic((n - 40) as u8)),
            49 => style.bg = None,
            n @ 90..=97 => style.fg = Some(Color::Basic((n - 90 + 8) as u8)),
            n @ 100..=107 => style.bg = Some(Color::Basic((n - 100 + 8) as u8)),
            38 | 48 => {
                let target = nums[i];
                let color = match nums.get(i + 1) {
                    Some(5) => {
                        let c = nums.get(i + 2).map(|n| Color::Indexed(*n as u8));
                        i += 2;
                        c
                    }
                    Some(2) => {
                        let c = match (nums.get(i + 2), nums.get(i + 3), nums.get(i + 4)) {
                            (Some(r), Some(g), Some(b)) => {
                                Some(Color::Rgb(*r as u8, *g as u8, *b as u8))
                            }
                            _ => None,
                        };
                        i += 4;
                        c
                    }
                    _ => None,
                };
                if target == 38 {
                    style.fg = color;
                } else {
                    style.bg = color;
                }
            }
            _ => {}
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_one_plain_span() {
        let s = parse("hello <b>world</b>");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].text, "hello <b>world</b>");
        assert!(s[0].style.is_plain());
    }

    #[test]
    fn sgr_colours_and_resets_split_the_line() {
        let s = parse("\x1b[1;31merror:\x1b[0m disk full");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].text, "error:");
        assert_eq!(s[0].style.classes(), "ansi-fg1 ansi-bold");
        assert!(s[1].style.is_plain());
        let bright = parse("\x1b[92mok");
        assert_eq!(bright[0].style.fg, Some(Color::Basic(10)));
    }

    #[test]
    fn extended_colours_become_inline_css() {
        let s = parse("\x1b[38;5;196mred\x1b[48;2;0;128;255mblue bg");
        assert_eq!(s[0].style.inline(), "color:#ff0000;");
        assert_eq!(
            s[1].style.inline(),
            "color:#ff0000;background-color:#0080ff;"
        );
    }

    #[test]
    fn other_escapes_and_controls_are_stripped() {
        let s = parse("\x1b[2K\x1b[1Gdone\x1b]0;title\x07 \x08!\x1b7");
        let text: String = s.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(text, "done !");
    }
}
