//! End-to-end: llmdeck's TUI in a real terminal (tmux), driven by keys.

mod common;

use std::time::Duration;

use common::{BIN, Sandbox};

#[test]
fn demo_shows_four_panes_help_and_quits_to_a_usable_shell() {
    let sb = Sandbox::new();
    let t = sb.tmux(120, 40, &[]);
    t.launch(&format!("'{BIN}' demo"));
    t.wait_for("the four pane titles", Duration::from_secs(10), |s| {
        ["1 Models", "2 GPUs", "3 Tests", "4 Logs"].iter().all(|title| s.contains(title))
    });
    // The demo's mock models start and become ready.
    t.wait_text("● ready", Duration::from_secs(20));

    t.keys(&["?"]);
    t.wait_text("Keys (one map for every pane)", Duration::from_secs(5));
    t.keys(&["Escape"]);
    t.wait_for("help to close", Duration::from_secs(5), |s| !s.contains("Keys (one map for every pane)"));

    // Models are running, so q asks first.
    t.keys(&["q"]);
    t.wait_text("Quit?", Duration::from_secs(5));
    t.keys(&["y"]);
    // Back at the shell, which echoes and runs commands again. (Typed only once llmdeck has
    // exited: until it handles the quit, keys typed are keys for llmdeck, as for any program.)
    assert_eq!(t.wait_exited(Duration::from_secs(20)), 0);
    t.type_line("echo shell-ok-$((40+2))");
    t.wait_text("shell-ok-42", Duration::from_secs(20));
    t.type_line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ,");
    t.wait_text("icanon,echo,", Duration::from_secs(5));
}

#[test]
fn without_a_config_llmdeck_says_where_it_looked() {
    let sb = Sandbox::new();
    let out = sb.command().output().expect("run llmdeck");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no configuration file at"), "{err}");
    assert!(err.contains(&sb.path().join("config").join("llmdeck").join("config.yaml").display().to_string()), "{err}");
    assert!(err.contains("llmdeck demo") && err.contains("llmdeck config init"), "{err}");
}

/// The process running in the pane's shell (the shell's only child).
fn child_of(pid: u32) -> u32 {
    children_of(pid).first().copied().expect("llmdeck runs in the pane")
}

#[test]
fn sigterm_and_sigint_stop_the_tui_and_restore_the_terminal() {
    for (signal, code) in [("TERM", 0), ("INT", 130)] {
        let sb = Sandbox::new();
        let t = sb.tmux(100, 30, &[]);
        t.launch(&format!("'{BIN}' demo"));
        t.wait_text("1 Models", Duration::from_secs(10));
        t.wait_text("● ready", Duration::from_secs(20));
        let llmdeck = child_of(t.pane_pid());
        common::unsafe_kill(llmdeck, if signal == "TERM" { 15 } else { 2 });
        assert_eq!(t.wait_exited(Duration::from_secs(20)), code);
        assert!(common::wait_gone(llmdeck, Duration::from_secs(5)));
        t.type_line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo | tr '\\n' ,");
        t.wait_text("icanon,echo,", Duration::from_secs(5));
    }
}

/// An SSH session that drops hangs up llmdeck's terminal: it must still stop its models and
/// clean up (the demo's temporary directory goes), not die mid-shutdown on a write to a
/// terminal that is gone.
#[test]
fn a_hung_up_terminal_still_stops_the_models_and_cleans_up() {
    let sb = Sandbox::new();
    let tmp = sb.tmp_dir();
    let t = sb.tmux(100, 30, &[]);
    t.type_line(&format!("exec '{BIN}' demo"));
    t.wait_text("1 Models", Duration::from_secs(10));
    t.wait_text("● ready", Duration::from_secs(20));
    let llmdeck = t.pane_pid();
    let models = children_of(llmdeck);
    assert!(!models.is_empty(), "the demo's models run under llmdeck");
    let demo_dirs = || std::fs::read_dir(&tmp).expect("read tmp").flatten().map(|e| e.file_name()).collect::<Vec<_>>();
    assert_eq!(demo_dirs().len(), 1, "the demo works in one temporary directory");

    t.hang_up();
    assert!(common::wait_gone(llmdeck, Duration::from_secs(20)), "llmdeck exits after the hang-up");
    for pid in models {
        assert!(common::wait_gone(pid, Duration::from_secs(5)), "model process {pid} is gone");
    }
    assert!(demo_dirs().is_empty(), "the demo's directory was removed: {:?}", demo_dirs());
}

fn children_of(pid: u32) -> Vec<u32> {
    let out = std::process::Command::new("pgrep").arg("-P").arg(pid.to_string()).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// SIGTERM while an operator reads a log in `$PAGER`: the pager ends and llmdeck still stops
/// its models and exits, instead of waiting for someone to leave the pager.
#[test]
fn sigterm_while_the_pager_is_open_still_stops_everything() {
    let sb = Sandbox::new();
    let t = sb.tmux(100, 30, &[("PAGER", "tail -f".into())]);
    t.launch(&format!("'{BIN}' demo"));
    t.wait_text("● ready", Duration::from_secs(20));
    let llmdeck = child_of(t.pane_pid());
    let models = children_of(llmdeck);
    t.keys(&["4"]);
    t.keys(&["o"]);
    t.wait_for("the pager to take the screen", Duration::from_secs(10), |s| !s.contains("1 Models"));

    common::unsafe_kill(llmdeck, 15);
    assert_eq!(t.wait_exited(Duration::from_secs(20)), 0);
    for pid in models {
        assert!(common::wait_gone(pid, Duration::from_secs(5)), "process {pid} outlived llmdeck");
    }
}

/// Once the screen is restored and only the models are stopping, llmdeck no longer reads the
/// terminal: a line typed then waits for the shell, which runs it when llmdeck exits.
#[test]
fn type_ahead_while_models_stop_reaches_the_shell() {
    let sb = Sandbox::new();
    let port = common::free_port();
    // Ignores SIGTERM: stopping it takes the whole stop timeout, then SIGKILL.
    let model = common::mock_model("slowstop", port, ", --ignore-sigterm", "")
        .replace("stop_timeout_s: 3", "stop_timeout_s: 4");
    let config = sb.write_config(&format!("gpu: {{ backend: none }}\nmodels:\n{model}"));
    let t = sb.tmux(100, 30, &[]);
    t.launch(&format!("'{BIN}' --config '{}'", config.display()));
    t.wait_text("● ready", Duration::from_secs(20));
    let llmdeck = child_of(t.pane_pid());
    t.keys(&["q"]);
    t.wait_text("Quit?", Duration::from_secs(5));
    t.keys(&["y"]);
    t.wait_text("stopping 1 model", Duration::from_secs(10));
    t.type_line("echo typed-ahead-$((40+2))");
    assert!(common::alive(llmdeck), "test premise: llmdeck is still stopping its model when the line is typed");
    assert_eq!(t.wait_exited(Duration::from_secs(20)), 0);
    t.wait_text("typed-ahead-42", Duration::from_secs(10));
}

/// Quitting while a test runs: the run is cancelled, its cleanup (a command that takes a few
/// seconds) runs to its end on a "cleaning up" screen, and only then does llmdeck stop the
/// models and exit; the report says the cleanup was done.
#[test]
fn quitting_waits_on_screen_for_a_runs_cleanup() {
    let sb = Sandbox::new();
    let marker = sb.path().join("cleaned");
    let model = common::mock_model("m", common::free_port(), ", --latency-ms, \"200\"", "");
    let config = sb.write_config(&format!(
        "gpu: {{ backend: none }}\nmodels:\n{model}tests:\n  - name: slow-cleanup\n    kind: local\n    model: m\n    probe: {{ requests: 1000, concurrency: 1 }}\n    cleanup_command: \"sleep 3; echo cleaned > '{}'\"\n",
        marker.display()
    ));
    let t = sb.tmux(120, 40, &[]);
    t.launch(&format!("'{BIN}' --config '{}'", config.display()));
    t.wait_text("● ready", Duration::from_secs(20));
    t.keys(&["3"]);
    t.keys(&["Enter"]);
    t.wait_text("probe", Duration::from_secs(10));
    t.wait_for("the probe step to run", Duration::from_secs(20), |s| s.contains("▶ ") && s.contains("in flight"));
    t.keys(&["q"]);
    t.wait_text("Quit?", Duration::from_secs(5));
    t.keys(&["y"]);
    t.wait_text("cleaning up before llmdeck stops", Duration::from_secs(10));
    t.wait_for("the cleanup step on screen", Duration::from_secs(10), |s| {
        s.contains("slow-cleanup") && s.contains("cleanup")
    });
    assert!(!marker.exists(), "test premise: the cleanup takes a few seconds");
    assert_eq!(t.wait_exited(Duration::from_secs(30)), 0);
    assert!(marker.exists(), "the cleanup ran to its end before llmdeck exited");
    let results = sb.path().join("data").join("llmdeck").join("results");
    let report = std::fs::read_dir(&results).expect("results").flatten().next().expect("a report").path();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(report).expect("read")).expect("json");
    assert_eq!(json["run"]["steps"][3]["name"], "cleanup");
    assert_eq!(json["run"]["steps"][3]["status"], "done", "{json}");
    assert_eq!(json["run"]["verdict"]["outcome"], "cancelled");
}

/// `kill -9` of the demo leaves nothing running — its models, their keepers, its shopper —
/// within the models' stop timeout (5 s) and two seconds, without starting llmdeck again; the
/// next demo removes the directory the dead one left.
#[test]
fn kill_9_of_the_demo_leaves_nothing_running_and_the_next_demo_sweeps_its_dir() {
    let sb = Sandbox::new();
    let tmp = sb.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let t = sb.tmux(120, 40, &[("TMPDIR", tmp.display().to_string())]);
    t.launch(&format!("'{BIN}' demo"));
    t.wait_for("three ready models", Duration::from_secs(30), |s| s.matches("● ready").count() >= 3);
    let llmdeck = child_of(t.pane_pid());
    let tree = common::descendants_of(llmdeck);
    assert!(tree.len() >= 8, "test premise: three models and the shopper, each with a keeper: {tree:?}");

    common::unsafe_kill(llmdeck, 9);
    assert_eq!(t.wait_exited(Duration::from_secs(10)), 137);
    let deadline = std::time::Instant::now() + Duration::from_secs(7);
    let left: Vec<String> = tree
        .iter()
        .filter(|pid| !common::wait_gone(**pid, deadline.saturating_duration_since(std::time::Instant::now())))
        .map(|pid| format!("{pid} {:?}", llmdeck::util::procfs::cmdline_args(*pid)))
        .collect();
    assert!(left.is_empty(), "still running after kill -9 of the demo: {left:?}");

    // The dead demo's directory is still there, marked running; once it is older than a
    // starting demo can be, the next demo removes it.
    let dirs = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&tmp)
            .expect("tmp")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("RUNNING").exists())
            .collect()
    };
    let stale = dirs();
    assert_eq!(stale.len(), 1, "{stale:?}");
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(stale[0].join("RUNNING"))
        .and_then(|f| f.set_modified(an_hour_ago))
        .expect("age the mark");
    t.type_line("clear");
    t.launch(&format!("'{BIN}' demo"));
    t.wait_text("1 Models", Duration::from_secs(20));
    assert!(!stale[0].exists(), "the dead demo's directory is still there");
    // Models running: quitting asks first.
    t.wait_text("● ready", Duration::from_secs(30));
    t.keys(&["q"]);
    t.wait_text("Quit?", Duration::from_secs(5));
    t.keys(&["y"]);
    assert_eq!(t.wait_exited(Duration::from_secs(20)), 0);
    assert!(dirs().is_empty(), "the clean exit removed its own directory: {:?}", dirs());
}
