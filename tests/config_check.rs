//! `llmdeck config check|path|init` through the binary, with XDG dirs in a temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A generous bound so a hang (e.g. an alias bomb being expanded) fails instead of blocking CI.
const DEADLINE: Duration = Duration::from_secs(60);

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        Sandbox { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn xdg_config_file(&self) -> PathBuf {
        self.path().join("config").join("llmdeck").join("config.yaml")
    }

    fn llmdeck(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmdeck"));
        let p = self.path();
        cmd.args(args)
            .env("HOME", p)
            .env("XDG_CONFIG_HOME", p.join("config"))
            .env("XDG_DATA_HOME", p.join("data"))
            .env("XDG_STATE_HOME", p.join("state"))
            .env_remove("LLMDECK_CONFIG")
            .env_remove("LLMDECK_TEST_SURELY_UNSET_VAR")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        run(self.llmdeck(args))
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    fn stderr_has(&self, text: &str) -> &Self {
        assert!(self.stderr.contains(text), "stderr lacks {text:?}:\n{}", self.stderr);
        self
    }

    fn stdout_has(&self, text: &str) -> &Self {
        assert!(self.stdout.contains(text), "stdout lacks {text:?}:\n{}", self.stdout);
        self
    }
}

/// Runs `cmd` to completion, killing it after [`DEADLINE`].
fn run(mut cmd: Command) -> Run {
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start llmdeck");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output: Output = match rx.recv_timeout(DEADLINE) {
        Ok(result) => result.expect("wait for llmdeck"),
        Err(_) => {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            panic!("llmdeck did not finish within {DEADLINE:?}");
        }
    };
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn fixture(name: &str) -> String {
    format!("tests/fixtures/config/{name}")
}

#[test]
fn the_example_passes_with_a_summary() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&["config", "check", "config.example.yaml"]);
    run.expect_code(0)
        .stdout_has("config.example.yaml: ok")
        .stdout_has("models (2):")
        .stdout_has("qwen-7b")
        .stdout_has("port 8001")
        .stdout_has("restart on-failure (max 5)")
        .stdout_has("tinyllama-deploy")
        .stdout_has("gpu:      auto")
        .stdout_has("shopper:  http://localhost:8080 (consumer id llmdeck-")
        .stdout_has("daemon:   listens on 127.0.0.1:7777");
    let log_dir = sandbox.path().join("state").join("llmdeck").join("logs");
    run.stdout_has(&format!("logs:     {}", log_dir.display()));
    assert!(run.stdout.lines().count() <= 24, "one screen:\n{}", run.stdout);
}

#[test]
fn the_minimal_fixture_passes() {
    Sandbox::new().run(&["config", "check", &fixture("minimal.yaml")]).expect_code(0).stdout_has("models (1):");
}

/// Each invalid fixture: exit 2 and `file:line:col: message` (and the hint where it matters).
#[test]
fn invalid_fixtures_name_file_line_and_column() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("unknown_key.yaml", "5:5: unknown key `restrat` in `models[0]`", Some("hint: did you mean `restart`?")),
        (
            "bad_policy.yaml",
            "6:15: `models[0].restart.policy` is `sometimes`, which is not a valid choice",
            Some("hint: one of: no, on-failure, always"),
        ),
        ("duplicate_id.yaml", "5:9: duplicate model id `qwen-7b` (first at line 2)", None),
        (
            "dotdot_id.yaml",
            "2:9: model id `../../etc/passwd` is not a valid name",
            Some("hint: use 1-64 letters, digits"),
        ),
        (
            "unset_var.yaml",
            "3:25: environment variable `LLMDECK_TEST_SURELY_UNSET_VAR` is not set",
            Some("${LLMDECK_TEST_SURELY_UNSET_VAR:-value}"),
        ),
        ("wrong_type.yaml", "4:11: `models[0].port` must be a whole number from 0 to 65535, found `eighty`", None),
        (
            "alias_bomb.yaml",
            "7:8: this alias takes the document past 100000 nodes once aliases are expanded \
             (an alias bomb?); refusing it",
            None,
        ),
        ("duplicate_port.yaml", "7:11: port 8001 is already used by model `qwen-7b` (line 4)", None),
        ("max_price.yaml", "5:16: `max_price` is 250; it must be above 0 and at most 100", None),
        ("syntax_error.yaml", "5:9: not valid YAML", Some("hint: look for an unclosed `[`")),
    ];
    let sandbox = Sandbox::new();
    for (name, message, hint) in cases {
        let path = fixture(name);
        let run = sandbox.run(&["config", "check", &path]);
        run.expect_code(2).stderr_has(&format!("{path}:{message}")).stderr_has(&format!("1 error in {path}"));
        if let Some(hint) = hint {
            run.stderr_has(hint);
        }
        assert!(run.stdout.is_empty(), "{name}: nothing on stdout");
    }
}

#[test]
fn every_semantic_error_is_listed() {
    let path = fixture("many_errors.yaml");
    let run = Sandbox::new().run(&["config", "check", &path]);
    run.expect_code(2)
        .stderr_has(&format!("{path}:3:15: `ui.refresh_ms` is 0 ms; it must be between 50 and 60000 ms"))
        .stderr_has(&format!("{path}:8:9: duplicate model id `a` (first at line 5)"))
        .stderr_has(&format!("{path}:10:11: port 8001 is already used by model `a` (line 7)"))
        .stderr_has(&format!("{path}:14:12: local test `t` names model `nope`, which is not in `models:`"))
        .stderr_has(&format!("4 errors in {path}"));
}

#[test]
fn an_oversize_file_is_refused_before_parsing() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("huge.yaml");
    let line = format!("# {}\n", "x".repeat(1022));
    std::fs::write(&path, line.repeat(1100)).expect("write huge file");
    let shown = path.display().to_string();
    sandbox
        .run(&["config", "check", &shown])
        .expect_code(2)
        .stderr_has(&format!("{shown}:1024:2: the file is larger than 1 MiB, the limit for a configuration"));
}

#[test]
fn variables_expand_from_the_environment() {
    let sandbox = Sandbox::new();
    let path = sandbox.path().join("c.yaml");
    std::fs::write(
        &path,
        "shopper:\n  consumer_id: \"ci-${LLMDECK_TEST_CONSUMER}\"\n  url: ${LLMDECK_TEST_URL:-http://127.0.0.1:9}\n",
    )
    .expect("write config");
    let mut cmd = sandbox.llmdeck(&["config", "check", &path.display().to_string()]);
    cmd.env("LLMDECK_TEST_CONSUMER", "runner-3").env_remove("LLMDECK_TEST_URL");
    run(cmd).expect_code(0).stdout_has("shopper:  http://127.0.0.1:9 (consumer id ci-runner-3)");
}

#[test]
fn a_missing_file_says_where_it_looked_and_what_to_do() {
    let sandbox = Sandbox::new();
    let expected = sandbox.xdg_config_file();
    sandbox
        .run(&["config", "check"])
        .expect_code(2)
        .stderr_has(&format!("{}: no configuration file here", expected.display()))
        .stderr_has("llmdeck config init");
}

#[test]
fn path_follows_flag_then_environment_then_xdg() {
    let sandbox = Sandbox::new();
    let xdg = sandbox.xdg_config_file();
    sandbox.run(&["config", "path"]).expect_code(0).stdout_has(&format!("{}\n", xdg.display()));
    sandbox.run(&["config", "path", "--config", "/etc/llmdeck.yaml"]).expect_code(0).stdout_has("/etc/llmdeck.yaml\n");
    let mut cmd = sandbox.llmdeck(&["config", "path"]);
    cmd.env("LLMDECK_CONFIG", "/srv/deck.yaml");
    run(cmd).expect_code(0).stdout_has("/srv/deck.yaml\n");
}

#[test]
fn init_writes_the_example_once_and_never_overwrites() {
    let sandbox = Sandbox::new();
    let target = sandbox.xdg_config_file();
    sandbox.run(&["config", "init"]).expect_code(0).stdout_has(&target.display().to_string());
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml"))
        .expect("read example");
    assert_eq!(std::fs::read_to_string(&target).expect("read written"), example);

    // What init wrote is what check reads by default, and it is valid.
    sandbox.run(&["config", "check"]).expect_code(0).stdout_has(": ok");

    std::fs::write(&target, "# mine\n").expect("edit");
    sandbox.run(&["config", "init"]).expect_code(2).stderr_has("already exists");
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "# mine\n");
}

#[test]
fn init_honours_the_config_flag() {
    let sandbox = Sandbox::new();
    let target = sandbox.path().join("elsewhere").join("deck.yaml");
    let shown = target.display().to_string();
    sandbox.run(&["--config", &shown, "config", "init"]).expect_code(0);
    assert!(target.is_file());
    assert!(!sandbox.xdg_config_file().exists());
    sandbox.run(&["--config", &shown, "config", "check"]).expect_code(0);
}
