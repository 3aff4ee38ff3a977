//! Text cleaning: what a line looks like on screen (no escape sequences or control
//! characters), and the OSC 52 clipboard sequence.

use super::*;

/// What a line looks like on screen: what a terminal would show after carriage returns
/// (progress bars), without escape sequences or other control characters, tabs as spaces, at
/// most `max_bytes` (then cut with `…`). Borrowed when nothing needs changing.
pub fn display_text(raw: &str, max_bytes: usize) -> Cow<'_, str> {
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let raw = raw.rfind('\r').map_or(raw, |i| &raw[i + 1..]);
    let (raw, cut) = if raw.len() > max_bytes {
        let mut end = max_bytes;
        while !raw.is_char_boundary(end) {
            end -= 1;
        }
        (&raw[..end], true)
    } else {
        (raw, false)
    };
    // 0xC2 starts the C1 controls (U+0080..U+009F); it also starts harmless Latin-1 letters,
    // which only cost the slow path.
    let needs_cleaning = raw.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2);
    if !needs_cleaning && !cut {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len() + CUT_MARK.len());
    if needs_cleaning {
        clean_into(raw, &mut out);
    } else {
        out.push_str(raw);
    }
    if cut {
        out.push_str(CUT_MARK);
    }
    Cow::Owned(out)
}

pub(super) fn clean_into(raw: &str, out: &mut String) {
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' | '\u{9b}' | '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}' => {
                crate::util::skip_escape_sequence(c, &mut chars);
            }
            '\t' => out.push_str(TAB),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
}

/// What the pane shows of a line: [`display_text`], without the header that repeats the time
/// and level columns when `compact`.
pub(super) fn shown_text(raw: &str, compact: bool, max_bytes: usize) -> Cow<'_, str> {
    let text = display_text(raw, max_bytes);
    let Some(header) = compact.then(|| redundant_header(&text)).flatten() else {
        return text;
    };
    match text {
        Cow::Borrowed(text) if header.start == 0 => Cow::Borrowed(&text[header.end..]),
        text => Cow::Owned(format!("{}{}", &text[..header.start], &text[header.end..])),
    }
}

/// The OSC 52 sequence that sets the clipboard ("c") to `text`.
pub(super) fn osc52(text: &str) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    format!("\x1b]52;c;{encoded}\x07")
}
