//! The loading pipeline end to end, on text in memory.

use super::*;

fn env(name: &str) -> Option<String> {
    match name {
        "HOSTNAME" => Some("box7".into()),
        "HOME" => Some("/home/op".into()),
        _ => None,
    }
}

fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str_with_env(text, "c.yaml", &env)
}

fn errors(text: &str) -> Vec<String> {
    load(text)
        .expect_err("should be invalid")
        .errors()
        .iter()
        .map(|e| {
            let p = e.pos.unwrap_or(Pos::new(0, 0));
            format!("{}:{}: {}", p.line, p.column, e.message)
        })
        .collect()
}

const MODELS: &str = "\
models:
  - id: a
    command: vllm
    port: 8001
  - id: b
    command: vllm
    port: 8002
";

#[test]
fn the_example_is_valid_and_complete() {
    let config = load(EXAMPLE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.models.len(), 2);
    assert_eq!(config.models[0].command, "vllm");
    assert_eq!(config.models[0].args[3], "8001");
    assert_eq!(config.models[0].env["VLLM_LOGGING_LEVEL"], "INFO");
    assert_eq!(config.shopper, ShopperConfig::default(), "the example spells out the defaults");
    assert_eq!(config.tests.len(), 2);
    assert_eq!(config.models[1].restart.policy, RestartPolicy::Always);
    // Everything the example spells out for the first model is the default.
    let first = &config.models[0];
    assert_eq!(first.health, HealthConfig::default());
    assert_eq!(first.restart, RestartConfig::default());
    assert_eq!(config.ui, UiConfig::default());
    assert_eq!(config.gpu, GpuConfig::default());
    assert_eq!(config.logs, LogsConfig::default());
    assert_eq!(config.daemon, DaemonConfig::default());
}

#[test]
fn empty_files_mean_defaults() {
    assert_eq!(load("").unwrap(), Config::default());
    assert_eq!(load("# just a comment\n").unwrap(), Config::default());
}

#[test]
fn semantic_errors_are_all_reported_with_positions() {
    let text = format!(
        "{MODELS}  - id: a
    command: vllm
    port: 8001
  - id: ../etc
    command: vllm
    port: 8004
tests:
  - name: t
    kind: deploy
    model: m
    max_price: 250
    reservation_hours: 13
    deploy: {{ command: run }}
"
    );
    assert_eq!(
        errors(&text),
        [
            "8:9: duplicate model id `a` (first at line 2)",
            "10:11: port 8001 is already used by model `a` (line 4)",
            "11:9: model id `../etc` is not a valid name",
            "18:16: `max_price` is 250; it must be above 0 and at most 100",
            "19:24: `tests[0].reservation_hours` is 13 h; it must be between 1 and 12 h",
        ]
    );
}

#[test]
fn unset_variables_are_named_at_their_position() {
    let text = "shopper:\n  consumer_id: \"llmdeck-${NOPE}\"\n  url: ${SHOP_URL}\n";
    assert_eq!(
        errors(text),
        ["2:25: environment variable `NOPE` is not set", "3:8: environment variable `SHOP_URL` is not set",]
    );
}

#[test]
fn variables_expand_in_strings_only() {
    let config = load(&format!("{MODELS}    cwd: ${{HOME}}/srv\n    env: {{ A: \"${{NOPE:-x}}$$\" }}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.models[1].cwd.as_deref(), Some(Path::new("/home/op/srv")));
    assert_eq!(config.models[1].env["A"], "x$");
}

#[test]
fn local_tests_must_name_a_model() {
    let text = format!("{MODELS}tests:\n  - {{ name: t, kind: local, model: bb }}\n");
    assert_eq!(errors(&text), ["9:36: local test `t` names model `bb`, which is not in `models:`"]);
    let hint = load(&text).unwrap_err().errors()[0].hint.clone().unwrap();
    assert_eq!(hint, "did you mean `b`?");
}

#[test]
fn deploy_tests_need_a_deploy_section_and_a_price() {
    let text = "tests:\n  - name: t\n    kind: deploy\n    model: m\n";
    assert_eq!(
        errors(text),
        ["2:5: deploy test `t` has no `max_price`", "2:5: deploy test `t` has no `deploy:` section",]
    );
}

#[test]
fn deploy_only_keys_are_errors_on_local_tests() {
    let text = format!("{MODELS}tests:\n  - name: t\n    kind: local\n    model: a\n    max_price: 1\n");
    assert_eq!(errors(&text), ["12:5: `max_price` applies only to `kind: deploy` tests"]);
}

#[test]
fn bad_values_in_each_section() {
    let text = "\
ui: { refresh_ms: 0 }
gpu: { sample_ms: 100, history_s: 86400 }
logs: { dir: logs }
shopper: { url: localhost, consumer_id: \"a b\" }
daemon: { listen: localhost, max_clients: 0 }
models:
  - { id: m, command: ' ', port: 0, api_key_env: sk-123, health: { path: health }, env: { 1A: x }, restart: { delay_s: 10, max_delay_s: 5 } }
";
    let found = errors(text);
    let expected = [
        "1:19: `ui.refresh_ms` is 0 ms; it must be between 50 and 60000 ms",
        "2:35: `gpu.history_s` / `gpu.sample_ms` keeps 864000 samples per GPU; the limit is 100000",
        "3:14: `logs.dir` is a relative path: `logs`",
        "4:17: `shopper.url` is not an http(s) URL: `localhost`",
        "4:41: `shopper.consumer_id` is not a valid id: `a b`",
        "5:19: `daemon.listen` is not an address: `localhost`",
        "5:43: `daemon.max_clients` is 0; it must be between 1 and 1024",
        "7:23: `command` is empty",
        "7:34: `port` is 0; a model server needs a real port",
        "7:50: `api_key_env` must name an environment variable, got `sk-123`",
        "7:74: `health.path` must start with `/`, got `health`",
        "7:91: `1A` is not a valid environment variable name",
        "7:137: `max_delay_s` (5 s) is shorter than `delay_s` (10 s)",
    ];
    assert_eq!(found, expected);
}

#[test]
fn ports_may_not_clash_with_the_daemon() {
    let text = "models:\n  - { id: a, command: x, port: 7777 }\n";
    assert_eq!(errors(text), ["2:32: port 7777 is also the daemon's port (`daemon.listen`)"]);
}

#[test]
fn oversize_text_is_refused_before_parsing() {
    let text = format!("# {}\n", "x".repeat(MAX_FILE_BYTES));
    let e = load(&text).unwrap_err();
    assert_eq!(e.errors()[0].kind, ErrorKind::TooLarge);
    assert_eq!(e.errors()[0].pos, Some(Pos::new(1, MAX_FILE_BYTES + 1)));
}

#[test]
fn load_reports_missing_files_and_bad_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml");
    let e = super::load(&missing).unwrap_err();
    assert!(e.is_not_found());
    assert!(e.to_string().contains("nope.yaml: no configuration file here"));

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"ui:\n  theme: caf\xe9\n").unwrap();
    let e = super::load(&latin1).unwrap_err();
    assert_eq!(e.errors()[0].kind, ErrorKind::NotUtf8);
    assert_eq!(e.errors()[0].pos, Some(Pos::new(2, 13)));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// Arbitrary text is a configuration or a list of errors, never a panic; every error
    /// points inside the text.
    #[test]
    fn arbitrary_text_loads_or_is_refused_with_errors(text in proptest::prelude::any::<String>()) {
        check_loads_or_points_inside(&text)?;
    }

    /// The example configuration with a slice of it replaced by arbitrary text: the errors a
    /// typo or a broken edit gives, never a panic.
    #[test]
    fn a_damaged_example_loads_or_is_refused_with_errors(
        at in 0usize..20_000,
        len in 0usize..40,
        with in "[ -~\n\t:{}\\[\\]'\"#&*!|>-]{0,20}",
    ) {
        let example = include_str!("../../config.example.yaml");
        let mut start = at.min(example.len());
        while !example.is_char_boundary(start) { start -= 1; }
        let mut end = (start + len).min(example.len());
        while !example.is_char_boundary(end) { end -= 1; }
        let text = format!("{}{with}{}", &example[..start], &example[end..]);
        check_loads_or_points_inside(&text)?;
    }
}

fn check_loads_or_points_inside(text: &str) -> Result<(), proptest::test_runner::TestCaseError> {
    if let Err(errors) = load(text) {
        let lines = text.lines().count().max(1) + 1;
        for e in errors.errors() {
            proptest::prop_assert!(!e.message.is_empty());
            if let Some(pos) = &e.pos {
                proptest::prop_assert!(pos.line <= lines, "line {} of {lines}: {}", pos.line, e.message);
            }
        }
    }
    Ok(())
}
