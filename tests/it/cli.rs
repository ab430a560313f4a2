//! The `archtrace` binary as a user runs it: `stats`, configuration precedence, clear errors.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use archtrace_workload::shop::Simulation;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;

use crate::support::{binary, succeeded, ServerProcess};

#[tokio::test(flavor = "multi_thread")]
async fn stats_json_describes_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.duckdb");
    let mut server = ServerProcess::spawn(&db, &[]);
    let mut client = TraceServiceClient::connect(server.grpc.clone())
        .await
        .unwrap();
    let (mut spans, mut traces, mut services) = (0, BTreeSet::new(), BTreeSet::new());
    let (mut first, mut last) = (u64::MAX, 0);
    let mut errors = 0;
    for seed in 0..3 {
        let request =
            Simulation::starting_at(seed, 1_750_000_000_000_000_000 + seed * 60_000_000_000)
                .request_of_spans(100);
        for resource in &request.resource_spans {
            let attributes = &resource.resource.as_ref().unwrap().attributes;
            let value = |key: &str| {
                attributes.iter().find(|kv| kv.key == key).map(|kv| {
                    match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                            s,
                        ) => s.clone(),
                        other => panic!("{other:?}"),
                    }
                })
            };
            services.insert(value("service.name").unwrap());
            for span in resource.scope_spans.iter().flat_map(|s| &s.spans) {
                spans += 1;
                traces.insert(span.trace_id.clone());
                first = first.min(span.start_time_unix_nano);
                last = last.max(span.start_time_unix_nano);
                errors += u64::from(span.status.as_ref().is_some_and(|s| s.code == 2));
            }
        }
        client.export(request).await.unwrap();
    }
    server.signal("TERM");
    assert!(server.wait(Duration::from_secs(30)).success());

    let output = succeeded(
        Command::new(binary())
            .args(["stats", "--format", "json", "--db"])
            .arg(&db),
    );
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["spans"], spans);
    assert_eq!(stats["traces"], traces.len());
    assert_eq!(stats["services"], services.len());
    assert_eq!(stats["error_spans"], errors);
    let rfc3339 = |nanos: u64| {
        humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
    };
    assert_eq!(stats["first_span"], rfc3339(first));
    assert_eq!(stats["last_span"], rfc3339(last));
    assert_eq!(stats["schema_version"], archtrace_store::SCHEMA_VERSION);
    // The server stopped cleanly: its request log is all in the store, and what it derived too.
    assert_eq!(stats["log_unloaded_bytes"], 0);
    assert!(stats["minute_bucket_rows"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["hour_bucket_rows"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["store"], db.display().to_string());

    let text = succeeded(Command::new(binary()).args(["stats", "--db"]).arg(&db));
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(text.contains(&format!("spans        {spans}\n")), "{text}");
    assert!(
        text.contains(&format!(
            "schema       version {}\n",
            archtrace_store::SCHEMA_VERSION
        )),
        "{text}"
    );

    // Migrating a current store changes nothing and says its version.
    let migrated = succeeded(Command::new(binary()).args(["migrate", "--db"]).arg(&db));
    assert_eq!(
        String::from_utf8(migrated.stdout).unwrap(),
        format!(
            "{} is at schema version {}\n",
            db.display(),
            archtrace_store::SCHEMA_VERSION
        )
    );
    let again = succeeded(
        Command::new(binary())
            .args(["stats", "--format", "json", "--db"])
            .arg(&db),
    );
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["spans"], spans);
}

#[test]
fn stats_on_a_missing_store_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args(["stats", "--db"])
        .arg(dir.path().join("nothing.duckdb"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no store at") && stderr.contains("archtrace serve"),
        "{stderr}"
    );
}

/// Starts `serve` with the given config file, environment and flags, and returns which of the
/// candidate store files it created.
fn store_chosen(config: &str, env_db: Option<&str>, flag_db: Option<&str>) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("archtrace-serve.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(binary());
    command
        .current_dir(dir.path())
        .args(["serve", "--config"])
        .arg(&config_path)
        .env_remove("ARCHTRACE_DB")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    if let Some(db) = env_db {
        command.env("ARCHTRACE_DB", db);
    }
    if let Some(db) = flag_db {
        command.args(["--db", db]);
    }
    let mut child = command.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("archtrace listening"), "{line:?}");
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut created: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".duckdb"))
        .collect();
    created.sort();
    created
}

#[test]
fn flags_win_over_environment_which_wins_over_the_file() {
    let config = "db = \"file.duckdb\"\notlp_grpc_addr = \"127.0.0.1:0\"\notlp_http_addr = \"127.0.0.1:0\"\nadmin_addr = \"127.0.0.1:0\"\n";
    assert_eq!(store_chosen(config, None, None), ["file.duckdb"]);
    assert_eq!(
        store_chosen(config, Some("env.duckdb"), None),
        ["env.duckdb"]
    );
    assert_eq!(
        store_chosen(config, Some("env.duckdb"), Some("flag.duckdb")),
        ["flag.duckdb"]
    );
}

#[test]
fn a_config_typo_names_the_key_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("archtrace-serve.toml");
    std::fs::write(&config, "db = \"x.duckdb\"\nqueue_max_span = 5\n").unwrap();
    let output = Command::new(binary())
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("queue_max_span") && stderr.contains("line 2"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_a_busy_port_says_which_flag_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(binary())
        .args(["serve", "--db"])
        .arg(dir.path().join("a.duckdb"))
        .args(["--otlp-grpc-addr", &format!("127.0.0.1:{port}")])
        .args([
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--otlp-grpc-addr"), "{stderr}");
}

#[test]
fn help_keeps_its_examples_one_per_line() {
    for (command, example) in [
        ("graph", "  archtrace graph --traces dump.jsonl jaeger/*.json"),
        ("check", "  archtrace check --server http://127.0.0.1:4320 --since 15m --baseline architecture.json"),
        ("report", "  archtrace report --traces dump.jsonl -o report.html"),
    ] {
        let output = Command::new(binary()).args([command, "--help"]).output().unwrap();
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).unwrap();
        assert!(help.lines().any(|line| line == example), "{command}: {help}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_command_definitions() {
    let run = |args: &[&str]| -> String {
        let output = succeeded(Command::new(binary()).args(args));
        String::from_utf8(output.stdout).unwrap()
    };
    // Bash: the script parses, registers a completion for archtrace, and offers the commands.
    let bash = run(&["completions", "bash"]);
    let registered = succeeded(Command::new("bash").arg("-c").arg(format!(
        "{bash}\ncomplete -p archtrace && COMP_WORDS=(archtrace se) COMP_CWORD=1 COMP_LINE='archtrace se' \
         COMP_POINT=12 && _archtrace archtrace se archtrace && printf '%s\\n' \"${{COMPREPLY[@]}}\""
    )));
    let offered = String::from_utf8(registered.stdout).unwrap();
    assert!(offered.contains("-F _archtrace archtrace"), "{offered}");
    assert!(offered.lines().any(|l| l == "serve"), "{offered}");
    // Zsh and fish are not installed here: their scripts name the command and its subcommands.
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef archtrace"), "{zsh}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c archtrace"), "{fish}");
    for text in [&zsh, &fish] {
        for command in ["serve", "graph", "check", "completions"] {
            assert!(text.contains(command), "{command} in {text}");
        }
    }
    // The man page renders with groff without warnings, and documents the flags.
    let man = run(&["man"]);
    let mut groff = Command::new("groff")
        .args(["-man", "-Tutf8", "-ww", "-z"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("groff renders man pages");
    std::io::Write::write_all(groff.stdin.as_mut().unwrap(), man.as_bytes()).unwrap();
    let rendered = groff.wait_with_output().unwrap();
    assert!(rendered.status.success());
    assert_eq!(
        String::from_utf8_lossy(&rendered.stderr),
        "",
        "groff warnings"
    );
    assert!(man.contains(".TH archtrace 1"), "{man}");
    for command in ["serve", "graph", "hotspots", "completions"] {
        assert!(man.contains(command), "{command} in the man page");
    }
}
