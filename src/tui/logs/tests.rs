use super::*;
use crate::logs::Stream;
use chrono::TimeZone;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::style::Color;

fn line(sec: u32, level: Option<Level>, text: &str) -> LogLine {
    LogLine {
        ts: Utc.with_ymd_and_hms(2024, 11, 23, 14, 2, sec % 60).single().unwrap_or_default(),
        stream: Stream::Stdout,
        level,
        text: text.to_owned(),
        truncated: false,
        oom: false,
    }
}

fn oom_line(sec: u32, text: &str) -> LogLine {
    LogLine { oom: true, ..line(sec, Some(Level::Error), text) }
}

fn model(id: &str) -> LogSource {
    LogSource::Model(id.to_owned())
}

fn batch(source: &LogSource, lines: Vec<LogLine>) -> LogBatch {
    LogBatch { source: source.clone(), lines, dropped_before: 0 }
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn ch(c: char) -> KeyEvent {
    key(KeyCode::Char(c))
}

fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}

fn view_with_lines(n: u32, cap: usize) -> LogView {
    let mut view = LogView::new(cap);
    view.set_utc_offset(FixedOffset::east_opt(0));
    let src = model("m");
    for i in 0..n {
        view.push_batch(&batch(&src, vec![line(i, Some(Level::Info), &format!("line {i}"))]));
    }
    view
}

/// The demo screen's sources: a flood of INFO, some warnings, an OOM, a traceback.
fn demo_view() -> LogView {
    let mut view = LogView::new(1000);
    view.set_utc_offset(FixedOffset::east_opt(0));
    let qwen = model("qwen-7b");
    let llama = model("llama-8b");
    let embed = model("embed-small");
    let test = LogSource::Test("tiny-deploy".into());
    view.push_batch(&batch(
        &qwen,
        vec![
            line(1, Some(Level::Info), "INFO 11-23 14:02:01 [api_server.py:12] Started server process"),
            line(2, Some(Level::Info), "INFO 11-23 14:02:02 [metrics.py:3] Avg prompt throughput: 4.1 tokens/s"),
        ],
    ));
    view.push_batch(&batch(
        &llama,
        vec![
            line(3, Some(Level::Info), "Loading safetensors checkpoint shards 3/4"),
            line(4, Some(Level::Warn), "WARNING 11-23 14:02:04 [config.py:1] Casting torch.bfloat16 to torch.float16"),
        ],
    ));
    view.push_batch(&batch(&test, vec![line(5, Some(Level::Error), "ssh: connection refused, retrying in 2s")]));
    view.push_batch(&batch(
        &embed,
        vec![
            line(6, Some(Level::Error), "Traceback (most recent call last):"),
            line(6, None, "  File \"server.py\", line 12, in <module>"),
            oom_line(7, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"),
        ],
    ));
    view.push_batch(&batch(
        &qwen,
        vec![
            line(8, Some(Level::Info), "INFO 11-23 14:02:08 [metrics.py:3] Avg prompt throughput: 3.9 tokens/s"),
            line(9, Some(Level::Debug), "DEBUG 11-23 14:02:09 [scheduler.py:7] running: 2 waiting: 0"),
        ],
    ));
    view.push_batch(&batch(
        &llama,
        vec![line(10, Some(Level::Info), "Loading safetensors checkpoint shards 4/4, about to allocate the KV cache")],
    ));
    view
}

fn draw(view: &mut LogView, width: u16, height: u16, focused: bool) -> Terminal<TestBackend> {
    let backend = TestBackend::new(width, height);
    let Ok(mut terminal) = Terminal::new(backend);
    let theme = Theme::new(true);
    let Ok(_) = terminal.draw(|f| view.render(f, f.area(), &theme, focused));
    terminal
}

/// The screen, each row followed by a marker row where styles matter: `^` search match,
/// `=` selected row, `!` error style (red).
fn dump(terminal: &Terminal<TestBackend>) -> String {
    let buf = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        let mut text = String::new();
        let mut marks = String::new();
        for x in 0..buf.area.width {
            let cell = &buf[(x, y)];
            text.push_str(cell.symbol());
            marks.push(if cell.bg == Color::Yellow {
                '^'
            } else if cell.bg == Color::DarkGray {
                '='
            } else if cell.fg == Color::Red {
                '!'
            } else {
                ' '
            });
        }
        out.push_str(text.trim_end());
        out.push('\n');
        if !marks.trim().is_empty() {
            out.push_str(marks.trim_end());
            out.push('\n');
        }
    }
    out
}

fn row_text(terminal: &Terminal<TestBackend>, y: u16) -> String {
    let buf = terminal.backend().buffer();
    (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>().trim_end().to_owned()
}

#[test]
fn snapshot_follow() {
    let mut view = demo_view();
    let terminal = draw(&mut view, 100, 12, true);
    assert_eq!(view.title_suffix(), "all · follow");
    insta::assert_snapshot!(dump(&terminal));
}

#[test]
fn snapshot_paused_with_search_highlights() {
    let mut view = demo_view();
    for c in "/alloc".chars() {
        view.handle_key(ch(c));
    }
    assert!(view.is_capturing_input());
    view.handle_key(key(KeyCode::Enter));
    assert!(!view.is_capturing_input());
    assert!(!view.is_following(), "a search jump pauses");
    assert_eq!(view.title_suffix(), "all · paused · /alloc");
    assert!(view.selected_text().is_some_and(|t| t.ends_with("allocate the KV cache")));
    view.handle_key(ch('n'));
    assert!(view.selected_text().is_some_and(|t| t.starts_with("torch.OutOfMemoryError")));
    let terminal = draw(&mut view, 100, 12, true);
    insta::assert_snapshot!(dump(&terminal));
}

#[test]
fn snapshot_filtered_to_one_source() {
    let mut view = demo_view();
    view.set_source_filter(Some(model("qwen-7b")));
    assert_eq!(view.title_suffix(), "qwen-7b · follow");
    let terminal = draw(&mut view, 100, 8, true);
    insta::assert_snapshot!(dump(&terminal));
}

#[test]
fn snapshot_search_prompt_and_regex_error() {
    let mut view = demo_view();
    view.handle_key(ch('/'));
    view.handle_key(ctrl('r'));
    for c in "shards (".chars() {
        view.handle_key(ch(c));
    }
    let terminal = draw(&mut view, 100, 5, true);
    insta::assert_snapshot!(dump(&terminal));
    // Enter on an invalid regex keeps the prompt open; fixing it finds the line.
    view.handle_key(key(KeyCode::Enter));
    assert!(view.is_capturing_input());
    view.handle_key(ch('3'));
    view.handle_key(ch(')'));
    view.handle_key(key(KeyCode::Enter));
    assert!(!view.is_capturing_input());
    assert_eq!(view.selected_text(), Some("Loading safetensors checkpoint shards 3/4"));
}

#[test]
fn snapshot_wrap_and_source_picker() {
    let mut view = demo_view();
    view.handle_key(ch('w'));
    let terminal = draw(&mut view, 60, 10, true);
    insta::assert_snapshot!("wrap", dump(&terminal));
    view.handle_key(ch('s'));
    assert!(view.is_capturing_input());
    let terminal = draw(&mut view, 60, 10, true);
    insta::assert_snapshot!("picker", dump(&terminal));
    view.handle_key(ch('j'));
    view.handle_key(ch('j'));
    view.handle_key(key(KeyCode::Enter));
    assert_eq!(view.source_filter(), Some(&model("llama-8b")));
    assert!(!view.is_capturing_input());
}

#[test]
fn ring_bounds_and_drop_counter() {
    let mut view = LogView::new(100);
    let a = model("a");
    let b = model("b");
    for i in 0..50 {
        let lines = (0..10).map(|j| line(j, None, &format!("a {i} {j}"))).collect();
        view.push_owned(LogBatch { source: a.clone(), lines, dropped_before: 3 });
    }
    view.push_batch(&batch(&b, vec![line(0, Some(Level::Error), "b")]));
    view.note_lagged(7);
    assert_eq!(view.held(), 100, "the all ring stays at its bound");
    let totals = view.totals();
    assert_eq!(totals.lines, 501);
    assert_eq!(totals.dropped, 50 * 3 + 7);
    assert_eq!(totals.errors, 1);
    view.set_source_filter(Some(a.clone()));
    assert_eq!(view.held(), 100);
    assert_eq!(view.counters().dropped, 150, "lag is not any one source's");
    view.set_source_filter(Some(b.clone()));
    assert_eq!(view.held(), 1, "b's ring keeps its line however much a prints");
    assert_eq!(view.counters().errors, 1);
    let terminal = draw(&mut view, 80, 3, true);
    assert!(row_text(&terminal, 2).starts_with("1 error · 0 dropped"));
    view.set_source_filter(None);
    let terminal = draw(&mut view, 80, 3, true);
    assert!(row_text(&terminal, 2).starts_with("1 error · 157 dropped"), "{}", row_text(&terminal, 2));
}

#[test]
fn level_filter_indices_stay_bounded_and_in_step() {
    let mut view = LogView::new(10);
    let src = model("m");
    for i in 0..1000 {
        let level = if i % 7 == 0 { Level::Warn } else { Level::Debug };
        view.push_batch(&batch(&src, vec![line(i, Some(level), &format!("{i}"))]));
    }
    for kept in &view.store.all.kept {
        assert!(kept.len() <= 10);
        assert!(kept.front().is_none_or(|&i| i >= view.store.all.lines.start()));
    }
    view.set_level_filter(LevelFilter::Warn);
    let visible = view.visible();
    let shown: Vec<&str> =
        (visible.start()..visible.end()).filter_map(|i| visible.get(i)).map(|e| e.line.text.as_str()).collect();
    // The last 10 lines are 990..=999; of those only 994 is a warning.
    assert_eq!(shown, vec!["994"]);
}

#[test]
fn follow_pause_and_resume() {
    let mut view = view_with_lines(100, 1000);
    let terminal = draw(&mut view, 60, 6, true);
    assert!(row_text(&terminal, 4).ends_with("line 99"));
    assert!(view.is_following());
    view.handle_key(ch('k'));
    assert!(!view.is_following(), "scrolling up pauses");
    assert_eq!(view.selected_text(), Some("line 98"));
    let src = model("m");
    view.push_batch(&batch(&src, vec![line(0, None, "new line")]));
    let terminal = draw(&mut view, 60, 6, true);
    assert!(row_text(&terminal, 4).ends_with("line 99"), "paused: the screen stays");
    assert_eq!(view.selected_text(), Some("line 98"));
    view.handle_key(ch('F'));
    assert!(view.is_following());
    let terminal = draw(&mut view, 60, 6, true);
    assert!(row_text(&terminal, 4).ends_with("new line"));
    view.handle_key(ch('g'));
    assert_eq!(view.selected_text(), Some("line 0"));
    view.handle_key(key(KeyCode::PageDown));
    let terminal = draw(&mut view, 60, 6, true);
    assert_eq!(view.selected_text(), Some("line 4"), "a page is the rows shown, less one");
    assert!(row_text(&terminal, 0).ends_with("line 0"));
    view.handle_key(ch('G'));
    assert!(view.is_following());
}

#[test]
fn moving_down_never_pauses_and_reaching_the_newest_line_follows_again() {
    let mut view = view_with_lines(10, 100);
    view.handle_key(ch('j'));
    view.handle_key(key(KeyCode::PageDown));
    assert!(view.is_following(), "down at the newest line keeps following");
    view.handle_key(ch('k'));
    view.handle_key(ch('k'));
    assert_eq!(view.selected_text(), Some("line 7"));
    view.handle_key(ch('j'));
    assert_eq!(view.selected_text(), Some("line 8"), "still paused one line short of the newest");
    view.handle_key(ch('j'));
    assert!(view.is_following(), "back at the newest line: following again");
}

#[test]
fn paused_selection_survives_eviction() {
    let mut view = view_with_lines(10, 10);
    view.handle_key(ch('g'));
    assert_eq!(view.selected_text(), Some("line 0"));
    let src = model("m");
    for i in 0..5 {
        view.push_batch(&batch(&src, vec![line(i, None, &format!("more {i}"))]));
    }
    view.handle_key(ch('j'));
    assert_eq!(view.selected_text(), Some("line 6"), "clamped to the oldest held, then moved");
}

#[test]
fn error_jumps_go_back_from_the_newest() {
    let mut view = demo_view();
    view.handle_key(ch('e'));
    assert!(view.selected_text().is_some_and(|t| t.starts_with("torch.OutOfMemoryError")));
    view.handle_key(ch('e'));
    assert_eq!(view.selected_text(), Some("Traceback (most recent call last):"));
    view.handle_key(ch('e'));
    assert_eq!(view.selected_text(), Some("ssh: connection refused, retrying in 2s"));
    view.handle_key(ch('e'));
    assert_eq!(view.selected_text(), Some("ssh: connection refused, retrying in 2s"), "none older: stays");
    let terminal = draw(&mut view, 80, 4, true);
    assert!(row_text(&terminal, 3).ends_with("no older error line"));
    view.handle_key(ch('E'));
    assert_eq!(view.selected_text(), Some("Traceback (most recent call last):"));
}

#[test]
fn search_next_and_previous() {
    let mut view = demo_view();
    for c in "/throughput".chars() {
        view.handle_key(ch(c));
    }
    view.handle_key(key(KeyCode::Enter));
    assert!(view.selected_text().is_some_and(|t| t.contains("3.9 tokens/s")));
    view.handle_key(ch('n'));
    assert!(view.selected_text().is_some_and(|t| t.contains("4.1 tokens/s")));
    view.handle_key(ch('n'));
    assert!(view.selected_text().is_some_and(|t| t.contains("4.1 tokens/s")));
    view.handle_key(ch('N'));
    assert!(view.selected_text().is_some_and(|t| t.contains("3.9 tokens/s")));
    // Esc clears the search; `/` then Esc restores it.
    view.handle_key(ch('/'));
    view.handle_key(ch('x'));
    view.handle_key(key(KeyCode::Esc));
    assert!(view.title_suffix().ends_with("/throughput"));
    assert_eq!(view.handle_key(key(KeyCode::Esc)), LogViewOutcome::Consumed);
    assert!(!view.title_suffix().contains('/'));
    assert_eq!(view.handle_key(key(KeyCode::Esc)), LogViewOutcome::NotConsumed);
    // ↑ recalls the last pattern.
    view.handle_key(ch('/'));
    view.handle_key(key(KeyCode::Up));
    view.handle_key(key(KeyCode::Enter));
    assert!(view.title_suffix().ends_with("/throughput"));
}

#[test]
fn filters_keep_a_paused_position_in_time() {
    let mut view = demo_view();
    view.handle_key(ch('e'));
    view.handle_key(ch('e')); // the traceback
    view.handle_key(ch('j'));
    assert_eq!(view.selected_text(), Some("  File \"server.py\", line 12, in <module>"));
    view.handle_key(ch('v'));
    view.handle_key(ch('v'));
    assert_eq!(view.level_filter(), LevelFilter::Warn);
    // That line has no level (counts as INFO): the nearest older kept line is selected.
    assert_eq!(view.selected_text(), Some("Traceback (most recent call last):"));
    view.handle_key(ch('V'));
    view.handle_key(ch('V'));
    assert_eq!(view.level_filter(), LevelFilter::All);
    view.set_source_filter(Some(model("llama-8b")));
    assert!(view.selected_text().is_some_and(|t| t.starts_with("WARNING")));
    view.follow();
    assert!(view.selected_text().is_some_and(|t| t.ends_with("KV cache")));
}

#[test]
fn copy_gives_an_osc52_sequence() {
    let mut view = demo_view();
    let outcome = view.handle_key(ch('y'));
    let expected = osc52("Loading safetensors checkpoint shards 4/4, about to allocate the KV cache");
    assert_eq!(outcome, LogViewOutcome::Effect(LogEffect::Clipboard(expected.clone())));
    assert!(expected.starts_with("\x1b]52;c;TG9hZGluZy"));
    assert!(expected.ends_with('\x07'));
}

#[test]
fn pager_opens_the_source_shown_or_selected() {
    let mut view = demo_view();
    assert_eq!(view.handle_key(ch('o')), LogViewOutcome::Effect(LogEffect::OpenInPager(model("llama-8b"))));
    view.handle_key(ch('e'));
    assert_eq!(view.handle_key(ch('o')), LogViewOutcome::Effect(LogEffect::OpenInPager(model("embed-small"))));
    let mut empty = LogView::new(10);
    assert_eq!(empty.handle_key(ch('o')), LogViewOutcome::Consumed);
}

#[test]
fn global_keys_are_not_consumed() {
    let mut view = demo_view();
    for k in [ch('q'), ch('1'), ch('?'), ch('z'), ch('l'), key(KeyCode::Tab), ctrl('c')] {
        assert_eq!(view.handle_key(k), LogViewOutcome::NotConsumed, "{k:?}");
    }
    view.handle_key(ch('/'));
    assert_eq!(view.handle_key(ch('q')), LogViewOutcome::Consumed, "typing a search");
    assert_eq!(view.handle_key(ctrl('c')), LogViewOutcome::NotConsumed);
}

#[test]
fn seed_merges_sources_by_time_and_resets() {
    let mut view = view_with_lines(5, 100);
    view.set_source_filter(Some(model("shown")));
    view.set_source_filter(None);
    let mut tail = BTreeMap::new();
    tail.insert(model("b"), vec![line(2, None, "b2"), line(4, None, "b4")]);
    tail.insert(model("a"), vec![line(1, None, "a1"), line(3, Some(Level::Error), "a3")]);
    tail.insert(model("idle"), vec![]);
    view.seed(&tail);
    let order: Vec<&str> = view.store.all.lines.iter().map(|e| e.line.text.as_str()).collect();
    assert_eq!(order, vec!["a1", "b2", "a3", "b4"]);
    assert_eq!(view.totals(), LogCounters { lines: 4, dropped: 0, errors: 1 });
    assert!(view.store.by_source.contains_key(&model("idle")), "known sources are pickable");
    assert!(!view.store.by_source.contains_key(&model("m")));
    assert!(!view.store.by_source.contains_key(&model("shown")));
    view.set_source_filter(Some(model("a")));
    view.seed(&tail);
    assert_eq!(view.source_filter(), Some(&model("a")), "the filter survives a resync");
    assert_eq!(view.held(), 2);
}

#[test]
fn frame_draws_only_visible_lines_even_with_filters() {
    let mut view = LogView::new(50_000);
    let src = model("m");
    let lines = (0..50_000).map(|i| line(i, Some(Level::Debug), "debug noise")).collect();
    view.push_owned(batch(&src, lines));
    view.push_batch(&batch(&src, vec![line(0, Some(Level::Error), "the one")]));
    view.set_level_filter(LevelFilter::Error);
    let terminal = draw(&mut view, 60, 4, true);
    assert!(row_text(&terminal, 0).ends_with("the one"));
}

#[test]
fn compact_hides_repeated_headers_and_c_shows_raw_lines() {
    let mut view = demo_view();
    view.set_source_filter(Some(model("qwen-7b")));
    let terminal = draw(&mut view, 80, 3, true);
    assert_eq!(row_text(&terminal, 1), "14:02:09 DEBUG running: 2 waiting: 0");
    view.handle_key(ch('c'));
    assert_eq!(view.title_suffix(), "qwen-7b · follow · raw");
    let terminal = draw(&mut view, 80, 3, true);
    assert_eq!(row_text(&terminal, 1), "14:02:09 DEBUG DEBUG 11-23 14:02:09 [scheduler.py:7] running: 2 waiting: 0");
    // Search looks at what is shown.
    for c in "/scheduler.py\n".chars() {
        view.handle_key(if c == '\n' { key(KeyCode::Enter) } else { ch(c) });
    }
    assert!(view.selected_text().is_some_and(|t| t.contains("scheduler.py")));
    view.handle_key(ch('c'));
    view.handle_key(ch('n'));
    assert!(view.message.as_ref().is_some_and(|m| m.text.starts_with("no older match")));
}

#[test]
fn display_text_makes_lines_safe_to_draw() {
    assert_eq!(display_text("plain", 100), Cow::Borrowed("plain"));
    assert_eq!(display_text("\x1b[31mred\x1b[0m text", 100), "red text");
    assert_eq!(display_text("a\tb", 100), "a    b");
    assert_eq!(display_text("10%\r50%\r100% done", 100), "100% done");
    assert_eq!(display_text("line\r", 100), "line");
    assert_eq!(display_text("bell\x07 c1\u{9b}31mx \u{85}", 100), "bell\u{fffd} c1x \u{fffd}");
    assert_eq!(display_text("\x1b]8;;http://x\x1b\\link\x1b]8;;\x07", 100), "link");
    assert_eq!(display_text("héllo wörld", 100), "héllo wörld");
    assert_eq!(display_text("ééé", 3), "é…", "cut at a character boundary");
}

#[test]
fn wrapping_splits_at_the_width_and_respects_wide_characters() {
    assert_eq!(row_starts("abcdef", 3), vec![0, 3]);
    assert_eq!(row_starts("", 3), vec![0]);
    assert_eq!(row_starts("ab日本", 3), vec![0, 2, 5]);
}

#[test]
fn narrow_panes_drop_columns_before_text() {
    let mut view = demo_view();
    let terminal = draw(&mut view, 40, 3, true);
    let row = row_text(&terminal, 1);
    assert!(row.starts_with("14:02:10 INFO  Loading"), "{row}");
    let terminal = draw(&mut view, 28, 3, true);
    assert!(row_text(&terminal, 1).starts_with("INFO  Loading"));
    view.handle_key(ch('t'));
    let terminal = draw(&mut view, 80, 3, true);
    assert!(row_text(&terminal, 1).starts_with("llama-8b    INFO  Loading"));
}

proptest::proptest! {
    /// What a line looks like on screen: no control character survives (an escape sequence
    /// from a model cannot reach the terminal), and the byte cap holds.
    #[test]
    fn no_control_character_survives_display(raw in proptest::prelude::any::<String>(), max in 1usize..64) {
        let shown = display_text(&raw, max);
        proptest::prop_assert!(!shown.chars().any(char::is_control), "{shown:?}");
        proptest::prop_assert!(shown.len() <= max.max(4) * 4 + CUT_MARK.len(), "{shown:?}");
    }
}

/// A byte budget across sources: however long the lines, what is held stays within it, the
/// newest lines are the ones kept, and a lane's counters still count every line.
#[test]
fn the_memory_budget_keeps_the_newest_lines_within_bytes() {
    let mut view = LogView::new(10_000);
    view.set_memory_budget(64 << 10);
    let long = "x".repeat(4000);
    for n in 0..300u32 {
        let source = LogSource::Model(format!("m{}", n % 3));
        let batch =
            LogBatch { source, dropped_before: 0, lines: vec![line(n, Some(Level::Info), &format!("{n} {long}"))] };
        view.push_batch(&batch);
        assert!(view.bytes_held() <= 64 << 10, "{} bytes held after line {n}", view.bytes_held());
    }
    assert!(view.held() < 20, "held {} lines of 4 KB in 64 KiB", view.held());
    let newest = view.lane().lines.back().map(|e| e.line.text.split(' ').next().unwrap_or_default().to_owned());
    assert_eq!(newest.as_deref(), Some("299"));
    assert_eq!(view.totals().lines, 300);

    // A resync starts from a snapshot's tail: what was held before no longer counts.
    let tail: BTreeMap<LogSource, Vec<LogLine>> =
        [(LogSource::Model("m0".into()), vec![line(1, Some(Level::Info), "short")])].into_iter().collect();
    view.seed(&tail);
    assert_eq!(view.held(), 1);
    assert!(view.bytes_held() < 1024, "{} bytes held after a resync to one short line", view.bytes_held());
}
