//! Small helpers shared by several parts.

pub mod ports;
pub mod procfs;
pub mod signals;

/// The one redaction rule for every command line, URL or header llmdeck shows, logs or
/// writes: the values of secret-looking flags (`--api-key X`, `--token=X`), of secret-looking
/// variables (`HF_TOKEN=X`, `-e OPENAI_API_KEY=X`), of `Authorization:` headers and of
/// passwords in URLs (`https://user:X@host`) become `***`. Applied to argv, each argument is
/// also redacted as text (a `sh -c "…"` script carries whole command lines).
pub fn redact_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for arg in args {
        if hide_next && !arg.starts_with('-') {
            out.push("***".to_owned());
            hide_next = false;
            continue;
        }
        hide_next = is_secret_flag(arg) || arg.eq_ignore_ascii_case("authorization:");
        out.push(redact_text(arg));
    }
    out
}

/// [`redact_args`] for a command written as one string; its spacing is kept.
pub fn redact_command_line(command: &str) -> String {
    redact_text(command)
}

/// The rule of [`redact_args`] applied to free text (a command line, a log line).
pub fn redact_text(text: &str) -> String {
    use std::sync::LazyLock;
    const SECRET: &str = "(?:key|token|secret|password|passwd|credential)";
    static FLAG: LazyLock<Option<regex::Regex>> = LazyLock::new(|| {
        // `--api-key sk-1`, `--token=abc`; a following flag is not a value.
        regex::Regex::new(&format!(r"(?i)(?:^|\s)(-{{1,2}}[a-z0-9_.-]*{SECRET}[a-z0-9_.-]*)(=|\s+)([^\s-]\S*)?")).ok()
    });
    static OTHERS: LazyLock<Vec<(regex::Regex, &'static str)>> = LazyLock::new(|| {
        [
            // `HF_TOKEN=abc`, `-e OPENAI_API_KEY=abc`.
            (format!(r"(?i)\b([a-z0-9_]*{SECRET}[a-z0-9_]*)=\S+"), "$1=***"),
            // `Authorization: Bearer abc`, `authorization:abc`.
            (r"(?i)(authorization:\s*)(?:(bearer|basic|token)\s+)?\S+".to_owned(), "${1}${2} ***"),
            // `https://user:pass@host`.
            (r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]*@".to_owned(), "$1:***@"),
        ]
        .into_iter()
        .filter_map(|(pattern, replacement)| regex::Regex::new(&pattern).ok().map(|re| (re, replacement)))
        .collect()
    });
    let mut out = match FLAG.as_ref() {
        Some(re) => re
            .replace_all(text, |c: &regex::Captures<'_>| {
                let whole = &c[0];
                match c.get(3) {
                    Some(value) if is_secret_flag(&c[1]) => {
                        format!("{}***", &whole[..value.start() - c.get(0).map_or(0, |m| m.start())])
                    }
                    _ => whole.to_owned(),
                }
            })
            .into_owned(),
        None => text.to_owned(),
    };
    for (re, replacement) in OTHERS.iter() {
        let changed = match re.replace_all(&out, *replacement) {
            std::borrow::Cow::Owned(changed) => Some(changed),
            std::borrow::Cow::Borrowed(_) => None,
        };
        if let Some(changed) = changed {
            out = changed;
        }
    }
    out
}

/// Text from a peer, fit for one line of a message: control characters dropped, whitespace
/// runs collapsed, at most `max_chars` characters (cut with `…`).
pub fn clean_excerpt(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    let mut chars = 0;
    let mut space = false;
    let mut input = text.chars().peekable();
    while let Some(c) = input.next() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() {
            skip_escape_sequence(c, &mut input);
            continue;
        }
        // The pending space counts too: a cut is never past `max_chars`.
        if chars + 1 + usize::from(space) > max_chars {
            out.push('…');
            break;
        }
        if space {
            out.push(' ');
            chars += 1;
            space = false;
        }
        out.push(c);
        chars += 1;
    }
    out
}

/// After a control character `first` taken from `rest`: when it starts an escape sequence
/// (ESC, or the C1 forms of CSI, OSC, DCS, SOS, PM, APC), consumes the rest of it from
/// `rest` — so a terminal title, a clipboard write (OSC 52) or a cursor move from a peer
/// leaves nothing behind, not even its parameters. Other control characters consume nothing.
pub fn skip_escape_sequence(first: char, rest: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let introducer = if first == '\x1b' { rest.next() } else { Some(first) };
    match introducer {
        // CSI: parameters up to a final byte in @..~ (colours, cursor moves).
        Some('[' | '\u{9b}') => {
            rest.find(|c| ('@'..='~').contains(c));
        }
        // OSC, DCS, SOS, PM, APC: a string up to BEL or ST (ESC \ or U+009C).
        Some(']' | 'P' | 'X' | '^' | '_' | '\u{9d}' | '\u{90}' | '\u{98}' | '\u{9e}' | '\u{9f}') => {
            while let Some(c) = rest.next() {
                if c == '\x07' || c == '\u{9c}' || (c == '\x1b' && rest.next_if_eq(&'\\').is_some()) {
                    break;
                }
            }
        }
        _ => {}
    }
}

/// Whether a URL's host is this machine (`localhost`, `127.x`, `::1`): such targets never go
/// through an HTTP proxy (a bearer key for a local model must not travel to one).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Bytes in GiB with one decimal: `61.2`.
pub fn fmt_gib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / (1u64 << 30) as f64)
}

/// `--api-key`, `--hf-token`, `-password`; not `--api-key-env` or `--token-file`, whose values
/// name where a secret is, not the secret.
fn is_secret_flag(flag: &str) -> bool {
    let f = flag.trim_start_matches('-').to_ascii_lowercase();
    let names_a_place = ["-env", "_env", "-file", "_file", "-path", "_path"].iter().any(|s| f.ends_with(s));
    flag.starts_with('-')
        && !names_a_place
        && ["key", "token", "secret", "password", "passwd", "credential"].iter().any(|s| f.contains(s))
}

/// Milliseconds as people read them: `0.23 ms`, `4.1 ms`, `812 ms` (a sub-millisecond p50
/// is not `0 ms`).
pub fn fmt_ms(ms: f64) -> String {
    match ms {
        _ if ms < 1.0 => format!("{ms:.2} ms"),
        _ if ms < 100.0 => format!("{ms:.1} ms"),
        _ => format!("{ms:.0} ms"),
    }
}

/// `950ms`, `7s`, `2m05s`, `3h12m`.
pub fn fmt_duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 1000 => format!("{ms}ms"),
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Creates `dir` (and its missing parents) readable by the owner only (0700), for ledgers,
/// logs, reports and tokens. An existing directory that others can write to keeps its mode
/// (it may be shared on purpose) and is warned about once: others could swap llmdeck's files.
pub fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    // Before llmdeck's log exists the warning would go nowhere: it is given on a later call.
    if mode & 0o022 != 0 && tracing::dispatcher::has_been_set() {
        static WARNED: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());
        let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
        if !warned.iter().any(|d| d == dir) {
            warned.push(dir.to_owned());
            tracing::warn!(
                "{} can be written by others (mode {mode:o}): they could replace llmdeck's files there; `chmod 700` it",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Writes `bytes` whole (a temporary file synced and renamed into place), readable by the
/// owner only: a crash leaves the old file or the new one, never half of either.
pub fn write_private_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// This machine's host name, or `localhost`.
/// Microseconds since the Unix epoch (0 before it): a wall-clock stamp two processes on one
/// machine can compare.
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

pub fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "localhost".into())
}

/// The longest duration a command-line flag takes (30 days): beyond it a number is a typo,
/// and arithmetic on instants would overflow.
pub const MAX_FLAG_DURATION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// Parses a command-line duration: plain seconds (`1`, `0.5`) or with a unit (`500ms`, `2m`),
/// at most [`MAX_FLAG_DURATION`].
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let parsed = if let Ok(secs) = s.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(format!("`{s}` is not a valid duration (a non-negative number of seconds)"));
        }
        std::time::Duration::try_from_secs_f64(secs).unwrap_or(std::time::Duration::MAX)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("`{s}` is not a valid duration ({e}); try `1`, `0.5`, `500ms` or `2m`"))?
    };
    if parsed > MAX_FLAG_DURATION {
        return Err(format!("`{s}` is longer than 30 days, the longest duration llmdeck takes"));
    }
    Ok(parsed)
}

/// `outer: inner: innermost`, each part once, without reqwest's "for url (...)" (the same for
/// every request of a probe or health check: noise next to the cause).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let mut text = e.to_string();
        if let Some(at) = text.find(" for url (") {
            text.truncate(at);
        }
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_secret_flags_in_both_forms() {
        let args: Vec<String> = ["serve", "m", "--api-key", "sk-1", "--token=abc", "--port", "8001"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(redact_args(&args), ["serve", "m", "--api-key", "***", "--token=***", "--port", "8001"]);
    }

    #[test]
    fn one_rule_redacts_flags_variables_headers_and_url_passwords() {
        let cases = [
            ("vllm serve m --api-key sk-1 --port 8001", "vllm serve m --api-key *** --port 8001"),
            ("serve --token=abc --x", "serve --token=*** --x"),
            ("docker run -e HF_TOKEN=hf_abc -e MODE=fast img", "docker run -e HF_TOKEN=*** -e MODE=fast img"),
            ("curl -H 'Authorization: Bearer sk-2' http://h", "curl -H 'Authorization: Bearer *** http://h"),
            ("git clone https://bob:hunter2@example.com/r.git", "git clone https://bob:***@example.com/r.git"),
            ("llmdeck probe --api-key-env OPENAI_KEY_VAR", "llmdeck probe --api-key-env OPENAI_KEY_VAR"),
            ("serve --use-token --port 1", "serve --use-token --port 1"),
            ("plain words, no secrets", "plain words, no secrets"),
        ];
        for (raw, want) in cases {
            assert_eq!(redact_text(raw), want, "{raw}");
        }
        let script = "setsid sleep 1000 --api-key sk-3 & exec server --password=p4ss".to_owned();
        let argv: Vec<String> = ["sh", "-c", &script, "--hf-token", "hf_4"].iter().map(|s| s.to_string()).collect();
        let shown = redact_args(&argv).join(" ");
        for secret in ["sk-3", "p4ss", "hf_4"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn loopback_urls_are_recognised() {
        for url in ["http://127.0.0.1:8001", "http://localhost/v1", "http://[::1]:80", "https://u:p@127.0.0.2/x"] {
            assert!(is_loopback_url(url), "{url}");
        }
        for url in ["http://10.0.0.1:8001", "https://api.example.com", "http://localhost.example.com"] {
            assert!(!is_loopback_url(url), "{url}");
        }
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(fmt_duration_ms(950), "950ms");
        assert_eq!(fmt_duration_ms(7_000), "7s");
        assert_eq!(fmt_duration_ms(125_000), "2m05s");
        assert_eq!(fmt_duration_ms(3 * 3_600_000 + 12 * 60_000), "3h12m");
    }

    #[test]
    fn durations_parse_plain_and_with_units() {
        assert_eq!(parse_duration("1").unwrap(), std::time::Duration::from_secs(1));
        assert_eq!(parse_duration("0.5").unwrap(), std::time::Duration::from_millis(500));
        assert_eq!(parse_duration("500ms").unwrap(), std::time::Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), std::time::Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn absurd_durations_are_refused_not_panicked_on() {
        for s in ["1e20", "1e300", "100000000000000000000000s", "31days", "-1", "NaN", "inf"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
        assert_eq!(parse_duration("30days").unwrap(), MAX_FLAG_DURATION);
    }

    #[test]
    fn excerpts_drop_whole_escape_sequences() {
        let hostile = "mo\x1b]52;c;aGVsbG8=\x07del\x1b[2J\x1b[31m-x\u{9b}1;1H\u{9d}0;title\u{9c} \x1b]0;t\x1b\\ok\x1bc";
        assert_eq!(clean_excerpt(hostile, 100), "model-x ok");
    }

    proptest::proptest! {
        #[test]
        fn no_control_character_survives_an_excerpt(text in proptest::prelude::any::<String>(), max in 0usize..200) {
            let out = clean_excerpt(&text, max);
            proptest::prop_assert!(!out.chars().any(char::is_control), "{out:?}");
            proptest::prop_assert!(out.chars().count() <= max + 1);
        }
    }
}
