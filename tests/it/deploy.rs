//! The install path and the deployment recipes: the install script fetches, checks and
//! installs the archive the release workflow's packaging step makes, from a real HTTP server
//! (and refuses a tampered one); the
//! container recipe's environment and command start a server that passes its own health
//! check; compose and Kubernetes send the collector's traces to archtrace's OTLP port.
//! No Docker engine or cluster runs here, so the recipes are tested by their steps.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{binary, first_line, free_port, succeeded, KillOnDrop};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn install_script() -> PathBuf {
    repo().join("scripts/install.sh")
}

/// The release workflow's own packaging step (`.github/workflows/release.yml`, step "Package"),
/// run here for `target` on the binary under test: what it leaves is put in `folder`.
fn publish(folder: &Path, target: &str) {
    let workflow = std::fs::read_to_string(repo().join(".github/workflows/release.yml")).unwrap();
    let workflow: Value = serde_saphyr::from_str(&workflow).unwrap();
    let package = workflow["jobs"]["build"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["name"] == "Package")
        .expect("a Package step in the release workflow");
    let script = package["run"]
        .as_str()
        .unwrap()
        .replace("${{ matrix.target }}", target);
    let workspace = tempfile::tempdir().unwrap();
    let built = workspace.path().join(format!("target/{target}/release"));
    std::fs::create_dir_all(&built).unwrap();
    std::fs::copy(binary(), built.join("archtrace")).unwrap();
    std::fs::copy(repo().join("README.md"), workspace.path().join("README.md")).unwrap();
    succeeded(
        Command::new("bash")
            .args(["-e", "-c", &script])
            .current_dir(workspace.path()),
    );
    std::fs::create_dir_all(folder).unwrap();
    for asset in [
        format!("archtrace-{target}.tar.gz"),
        format!("archtrace-{target}.tar.gz.sha256"),
    ] {
        std::fs::copy(workspace.path().join(&asset), folder.join(&asset))
            .unwrap_or_else(|e| panic!("the Package step made no {asset}: {e}"));
    }
}

/// Python's HTTP server over `root`, once it answers.
fn serve_files(root: &Path) -> (KillOnDrop, String) {
    let port = free_port();
    let server = KillOnDrop(
        Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .arg("--directory")
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reqwest::blocking::get(&url).is_err() {
        assert!(Instant::now() < deadline, "the file server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, url)
}

fn install(releases: &str, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg(install_script())
        .args(args)
        .env("ARCHTRACE_RELEASES", releases)
        .output()
        .unwrap()
}

fn version_of(binary: &Path) -> String {
    String::from_utf8(succeeded(Command::new(binary).arg("--version")).stdout).unwrap()
}

#[test]
fn the_install_script_installs_a_checked_release_and_refuses_a_tampered_one() {
    // `succeeded` fails the test with shellcheck's findings.
    succeeded(Command::new("shellcheck").arg(install_script()));
    let target = String::from_utf8(
        succeeded(
            Command::new("sh")
                .arg(install_script())
                .arg("--print-target"),
        )
        .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    assert!(target.ends_with("linux-gnu"), "{target}");
    let root = tempfile::tempdir().unwrap();
    publish(&root.path().join("latest/download"), &target);
    publish(&root.path().join("download/v9.9.9"), &target);
    let (_server, releases) = serve_files(root.path());
    let dir = tempfile::tempdir().unwrap();

    let latest = dir.path().join("latest");
    let output = install(&releases, &["--to", latest.to_str().unwrap()]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(version_of(&latest.join("archtrace")), version_of(&binary()));
    assert!(String::from_utf8_lossy(&output.stdout).contains("installed archtrace"));

    let pinned = dir.path().join("pinned");
    let output = install(
        &releases,
        &["--version", "v9.9.9", "--to", pinned.to_str().unwrap()],
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(version_of(&pinned.join("archtrace")), version_of(&binary()));

    // A release that does not exist, and an archive that does not match its sum.
    let missing = dir.path().join("missing");
    let output = install(
        &releases,
        &["--version", "1.2.3", "--to", missing.to_str().unwrap()],
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("could not download"),
        "{output:?}"
    );
    let sum = root
        .path()
        .join(format!("latest/download/archtrace-{target}.tar.gz.sha256"));
    std::fs::write(&sum, format!("{}  x\n", "0".repeat(64))).unwrap();
    let tampered = dir.path().join("tampered");
    let output = install(&releases, &["--to", tampered.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("checksum mismatch"),
        "{output:?}"
    );
    assert!(!tampered.join("archtrace").exists());
}

/// The instructions of the Dockerfile's last stage, as (instruction, arguments).
fn runtime_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let stages: Vec<&str> = joined.split("\nFROM ").collect();
    stages
        .last()
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (instruction, rest) = l.split_once(' ').unwrap_or((l, ""));
            (instruction.to_owned(), rest.trim().to_owned())
        })
        .collect()
}

#[test]
fn the_container_recipe_serves_with_its_environment_and_passes_its_health_check() {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let stage = runtime_stage(&dockerfile);
    let all = |name: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    let user = all("USER");
    assert_eq!(user.len(), 1);
    assert!(!["root", "0"].contains(&user[0]), "runs as {}", user[0]);
    // The user the Kubernetes manifest runs as (runAsUser) is the one the image creates.
    let run = all("RUN").join(" ");
    assert!(run.contains("useradd --system --uid 10001"), "{run}");
    assert_eq!(all("EXPOSE"), ["4317 4318 4320"]);
    assert_eq!(all("VOLUME"), ["[\"/var/lib/archtrace\"]"]);
    // The environment the image runs with: every variable is one of archtrace's settings.
    let env: Vec<(String, String)> = all("ENV")
        .join(" ")
        .split_whitespace()
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let value = |key: &str| {
        env.iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {key} in {env:?}"))
    };
    assert!(value("ARCHTRACE_DB").starts_with("/var/lib/archtrace/"));
    assert_eq!(value("ARCHTRACE_OTLP_GRPC_ADDR"), "0.0.0.0:4317");
    assert_eq!(value("ARCHTRACE_OTLP_HTTP_ADDR"), "0.0.0.0:4318");
    assert_eq!(value("ARCHTRACE_ADMIN_ADDR"), "0.0.0.0:4320");
    assert_eq!(all("ENTRYPOINT"), ["[\"archtrace\"]"]);
    let command: Vec<String> = serde_json::from_str(all("CMD")[0]).unwrap();
    let health = all("HEALTHCHECK");
    let probe = health[0]
        .split(" CMD ")
        .nth(1)
        .expect("a health check command");
    assert!(probe.contains("http://127.0.0.1:4320/healthz"), "{probe}");

    // The image's command with its environment, on free ports and a temporary volume.
    let volume = tempfile::tempdir().unwrap();
    let mut server = Command::new(binary());
    server
        .args(&command)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in &env {
        let value = match key.as_str() {
            "ARCHTRACE_DB" => volume.path().join("archtrace.duckdb").display().to_string(),
            _ if value.starts_with("0.0.0.0:") => "127.0.0.1:0".to_owned(),
            _ => value.clone(),
        };
        server.env(key, value);
    }
    let mut server = KillOnDrop(server.spawn().unwrap());
    let line = first_line(&mut server.0);
    let admin = line
        .split_whitespace()
        .find_map(|part| part.strip_prefix("admin="))
        .unwrap_or_else(|| panic!("no admin address in {line:?}"));
    let probe = probe.replace("127.0.0.1:4320", admin);
    let checked = Command::new("sh").args(["-c", &probe]).status().unwrap();
    assert!(checked.success(), "the health check failed: {probe}");
    let ready = reqwest::blocking::get(format!("http://{admin}/readyz")).unwrap();
    assert_eq!(ready.status(), 200);
    assert!(volume.path().join("archtrace.duckdb").exists());
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Where a collector configuration sends traces: the endpoints of its trace pipelines' OTLP
/// exporters.
fn trace_endpoints(config: &Value) -> Vec<String> {
    config["service"]["pipelines"]["traces"]["exporters"]
        .as_array()
        .expect("a traces pipeline")
        .iter()
        .map(|name| {
            config["exporters"][name.as_str().unwrap()]["endpoint"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn compose_and_kubernetes_send_the_collectors_traces_to_archtrace() {
    let deploy = repo().join("deploy");
    let collector = &yaml_documents(&deploy.join("otel-collector.yaml"))[0];
    assert_eq!(trace_endpoints(collector), ["archtrace:4317"]);

    let compose = &yaml_documents(&deploy.join("docker-compose.yml"))[0];
    let archtrace = &compose["services"]["archtrace"];
    let dockerfile = deploy
        .join(archtrace["build"]["context"].as_str().unwrap())
        .join(archtrace["build"]["dockerfile"].as_str().unwrap());
    assert!(dockerfile.exists(), "{}", dockerfile.display());
    assert_eq!(archtrace["volumes"][0], "archtrace-data:/var/lib/archtrace");
    let mounted = compose["services"]["otel-collector"]["volumes"][0]
        .as_str()
        .unwrap();
    assert!(mounted.starts_with("./otel-collector.yaml:"), "{mounted}");

    let manifests = yaml_documents(&deploy.join("kubernetes/archtrace.yaml"));
    let find = |kind: &str, name: &str| {
        manifests
            .iter()
            .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let service_ports: Vec<u64> = find("Service", "archtrace")["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(service_ports, [4317, 4318, 4320]);
    let pod = &find("StatefulSet", "archtrace")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    let container = &pod["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/var/lib/archtrace"
    );
    // The cluster's collector is configured as the compose one.
    let embedded = find("ConfigMap", "otel-collector")["data"]["config.yaml"]
        .as_str()
        .unwrap();
    let embedded: Value = serde_saphyr::from_str(embedded).unwrap();
    assert_eq!(trace_endpoints(&embedded), ["archtrace:4317"]);
    assert_eq!(embedded["exporters"], collector["exporters"]);
}
