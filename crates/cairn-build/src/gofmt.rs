//! The few Go `fmt` renderings that BuildKit's history texts are made of.
//!
//! `docker history` shows `created_by` strings that BuildKit builds with `fmt.Sprintf("%q", …)`
//! and `%v` on Go values (`CMD ["nginx" "-g" "daemon off;"]`, `EXPOSE map[80/tcp:{}]`,
//! `VOLUME [/data]`). Matching them byte for byte keeps `cairn history` equal to `docker history`.

use std::fmt::Write as _;

/// Go's `strconv.Quote`: a double-quoted string with Go escapes; printable Unicode stays as is.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() => {
                let v = c as u32;
                if v <= 0xffff {
                    let _ = write!(out, "\\u{v:04x}");
                } else {
                    let _ = write!(out, "\\U{v:08x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `%q` of a `[]string`: `["a" "b"]` (space separated, as Go prints slices).
pub fn quote_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(" "))
}

/// `%v` of a `[]string`: `[a b]`.
pub fn plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// `%q` of an int: a Go rune literal (`'\x00'`, `'\x03'`, `'a'`), as `fmt` prints `%q` of
/// `Retries` in a HEALTHCHECK history line.
pub fn quote_rune(v: u32) -> String {
    match char::from_u32(v) {
        Some('\'') => "'\\''".into(),
        Some('\\') => "'\\\\'".into(),
        Some('\n') => "'\\n'".into(),
        Some('\t') => "'\\t'".into(),
        Some('\r') => "'\\r'".into(),
        Some('\u{7}') => "'\\a'".into(),
        Some('\u{8}') => "'\\b'".into(),
        Some('\u{c}') => "'\\f'".into(),
        Some('\u{b}') => "'\\v'".into(),
        Some(c) if v < 0x20 || v == 0x7f => format!("'\\x{:02x}'", c as u32),
        Some(c) if c.is_control() => format!("'\\u{v:04x}'"),
        Some(c) => format!("'{c}'"),
        None => "'\\ufffd'".into(),
    }
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `30s`, `1m30s`, `1h0m0s`, `500ms`, `2µs`.
pub fn duration(ns: u64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 1_000_000_000 {
        // Sub-second durations use the largest unit that keeps an integer part.
        let (unit, div) = if ns < 1_000 {
            ("ns", 1)
        } else if ns < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", frac(ns, div));
    }
    let total_s = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let h = total_s / 3600;
    let m = (total_s % 3600) / 60;
    let s = total_s % 60;
    let secs = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// `v / div` with the fractional digits Go keeps (trailing zeros dropped).
fn frac(v: u64, div: u64) -> String {
    let int = v / div;
    let rem = v % div;
    if rem == 0 {
        return int.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_go() {
        assert_eq!(quote("daemon off;"), r#""daemon off;""#);
        assert_eq!(quote("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(quote("\u{1}é"), r#""\x01é""#);
        assert_eq!(
            quote_list(&["nginx".into(), "-g".into(), "daemon off;".into()]),
            r#"["nginx" "-g" "daemon off;"]"#
        );
        assert_eq!(plain_list(&["/data".into(), "/x".into()]), "[/data /x]");
        assert_eq!(quote_rune(0), r"'\x00'");
        assert_eq!(quote_rune(3), r"'\x03'");
        assert_eq!(quote_rune(65), "'A'");
    }

    #[test]
    fn durations_like_go() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(30_000_000_000), "30s");
        assert_eq!(duration(90_000_000_000), "1m30s");
        assert_eq!(duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(duration(1_500_000_000), "1.5s");
        assert_eq!(duration(500_000_000), "500ms");
        assert_eq!(duration(2_000), "2µs");
        assert_eq!(duration(7), "7ns");
    }
}
