//! The Kubernetes deployment (deploy/kubernetes, scripts/k8s/make-secrets.sh) checked without a
//! cluster: the kustomize output (or, without kubectl, every file kustomization.yaml lists) and
//! the Secret made by make-secrets.sh are validated against the Kubernetes JSON schemas by
//! `kubernetes-validate` (PyPI; it ships the schemas and works offline), and the properties the
//! peers rely on are checked here: the headless Service publishes not-ready pods and carries the
//! UDP port, the probes hit /healthz and /readyz on the metrics port, the grace period outlasts
//! `--leave-grace`, every pod finds its certificate under its name in the mounted Secret.
//! Skipped, with the reason printed, when kubernetes-validate or python3 is missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
/// The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37 ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `program args` under coreutils `timeout`, so a hung tool fails the test instead of
/// hanging it. `None` when the program cannot be started at all.
fn run(limit_secs: u64, program: &str, args: &[&str]) -> Option<Output> {
    Command::new("timeout")
        .arg(format!("{limit_secs}s"))
        .arg(program)
        .args(args)
        .output()
        .ok()
        // timeout's 127: the program is not there.
        .filter(|o| o.status.code() != Some(127))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// How to run kubernetes-validate here: its own command, else the module of the python3 on
/// PATH (installed but not on PATH, e.g. a pyenv without rehash). `Err`: why this test cannot
/// run here.
fn validator() -> Result<&'static [&'static str], String> {
    const COMMANDS: [&[&str]; 2] = [
        &["kubernetes-validate"],
        &["python3", "-m", "kubernetes_validate"],
    ];
    let works =
        |command: &[&str]| run(60, command[0], &command[1..]).is_some_and(|o| o.status.success());
    let command = COMMANDS
        .into_iter()
        .find(|command| works(&[*command, &["--version"]].concat()))
        .ok_or_else(|| {
            "kubernetes-validate not installed (pip install kubernetes-validate)".to_string()
        })?;
    if !works(&["python3", "-c", "import yaml"]) {
        return Err("python3 with PyYAML not found (pip install kubernetes-validate)".into());
    }
    Ok(command)
}

/// Every document of the YAML file `path`, as JSON (python3 and PyYAML, which
/// kubernetes-validate depends on, do the parsing).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let script = "import json, sys, yaml\n\
                  with open(sys.argv[1]) as f:\n    \
                  docs = [d for d in yaml.safe_load_all(f) if d is not None]\n\
                  json.dump(docs, sys.stdout)";
    let path_text = path.to_str().expect("a UTF-8 path");
    let out = run(60, "python3", &["-c", script, path_text]).expect("start python3");
    assert!(
        out.status.success(),
        "parse {} as YAML: {}",
        path.display(),
        text(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("python3 prints JSON") {
        Value::Array(docs) => docs,
        other => panic!("expected a list of documents, got {other}"),
    }
}

/// Validates `path` (one or more resources) against the Kubernetes schemas, strictly (unknown
/// fields are errors), for each of [`KUBERNETES_VERSIONS`].
fn assert_valid(validator: &[&str], path: &Path) {
    let path_text = path.to_str().expect("a UTF-8 path");
    for version in KUBERNETES_VERSIONS {
        let args = [
            &validator[1..],
            &["--strict", "--quiet", "-k", version, path_text],
        ]
        .concat();
        let out = run(120, validator[0], &args).expect("start kubernetes-validate");
        assert!(
            out.status.success(),
            "{} does not validate against Kubernetes {version}:\n{}{}",
            path.display(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// The manifests `kubectl apply -k deploy/kubernetes` would apply, written to `dir`: the
/// kustomize output when kubectl can build it, else every resource file kustomization.yaml lists
/// (each checked to exist), one after another.
fn rendered_manifests(dir: &Path) -> PathBuf {
    let base = repo().join("deploy/kubernetes");
    let rendered = dir.join("rendered.yaml");
    let base_text = base.to_str().expect("a UTF-8 path");
    match run(60, "kubectl", &["kustomize", base_text]) {
        Some(out) if out.status.success() => {
            std::fs::write(&rendered, &out.stdout).expect("write the kustomize output");
            return rendered;
        }
        Some(out) => panic!(
            "kubectl kustomize {base_text} failed: {}",
            text(&out.stderr)
        ),
        None => eprintln!(
            "NOTE: kubectl not found; validating each file kustomization.yaml lists instead of \
             the kustomize output"
        ),
    }
    let kustomization = yaml_documents(&base.join("kustomization.yaml"));
    let resources = kustomization[0]["resources"]
        .as_array()
        .expect("kustomization.yaml lists resources");
    let mut all = String::new();
    for resource in resources {
        let name = resource.as_str().expect("a resource is a file name");
        let file = base.join(name);
        let contents = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("kustomization.yaml lists {name}, unreadable: {e}"));
        all.push_str("---\n");
        all.push_str(&contents);
        all.push('\n');
    }
    std::fs::write(&rendered, all).expect("write the resource files together");
    rendered
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

/// The value of `--flag` in `args`, written `--flag=value` or `--flag value`.
fn flag<'a>(args: &'a [&'a str], name: &str) -> Option<&'a str> {
    let with_equals = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if let Some(value) = a.strip_prefix(&with_equals) {
            Some(value)
        } else if *a == name {
            args.get(i + 1).copied()
        } else {
            None
        }
    })
}

fn flag_value<'a>(args: &'a [&'a str], name: &str) -> &'a str {
    flag(args, name).unwrap_or_else(|| panic!("the peer's args lack {name}: {args:?}"))
}

/// The container port `port` names (or is), as a number.
fn port_number(container: &Value, port: &Value) -> u64 {
    if let Some(n) = port.as_u64() {
        return n;
    }
    let name = port.as_str().expect("a port is a number or a name");
    container["ports"]
        .as_array()
        .expect("the container lists ports")
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

fn check_service(docs: &[Value]) {
    let service = find(docs, "Service", "rumor-headless");
    let spec = &service["spec"];
    assert_eq!(spec["clusterIP"], "None", "the Service must be headless");
    assert_eq!(
        spec["publishNotReadyAddresses"], true,
        "not-ready pods must be in DNS, or the first peers never find each other"
    );
    let ports = spec["ports"].as_array().expect("the Service lists ports");
    assert!(
        ports
            .iter()
            .any(|p| p["port"] == 7000 && p["protocol"] == "UDP"),
        "the Service needs UDP port 7000 (QUIC): {ports:?}"
    );
    assert!(
        ports
            .iter()
            .any(|p| p["port"] == 9100 && p["protocol"].as_str().unwrap_or("TCP") == "TCP"),
        "the Service needs TCP port 9100 (metrics): {ports:?}"
    );
}

/// The StatefulSet; returns the name of the Secret mounted at --certs.
fn check_statefulset(docs: &[Value]) -> String {
    let set = find(docs, "StatefulSet", "rumor");
    let spec = &set["spec"];
    assert_eq!(spec["serviceName"], "rumor-headless");
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"]
        .as_array()
        .expect("the pod has containers");
    let peer = containers
        .iter()
        .find(|c| {
            c["args"]
                .as_array()
                .is_some_and(|a| a.first() == Some(&"peer".into()))
        })
        .expect("a container runs `rumor peer`");
    let args: Vec<&str> = peer["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("every arg is a string"))
        .collect();
    let env = |name: &str| {
        peer["env"]
            .as_array()
            .expect("the peer has env")
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("the peer has no env {name}"))
            .clone()
    };

    // The peer's identity, shard and addresses come from the pod.
    assert_eq!(flag_value(&args, "--name"), "auto");
    assert_eq!(flag_value(&args, "--shard"), "auto");
    assert!(
        args.contains(&"--resume"),
        "a restarted pod must resume: {args:?}"
    );
    assert_eq!(flag_value(&args, "--listen"), "0.0.0.0:7000");
    assert_eq!(flag_value(&args, "--advertise"), "$(POD_IP):7000");
    assert_eq!(
        env("POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    assert_eq!(
        flag_value(&args, "--seed"),
        "dns:rumor-headless.$(POD_NAMESPACE).svc.cluster.local:7000"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(flag_value(&args, "--replicas"), "$(RUMOR_REPLICAS)");
    assert_eq!(
        env("RUMOR_REPLICAS")["value"].as_str(),
        Some(spec["replicas"].to_string().as_str()),
        "RUMOR_REPLICAS (the shard count) must equal the replica count"
    );

    // Probes on the metrics port the peer serves.
    let metrics_addr = flag_value(&args, "--metrics-addr");
    assert_eq!(
        metrics_addr, "0.0.0.0:9100",
        "metrics must be reachable by the kubelet"
    );
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &peer[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(port_number(peer, &get["port"]), 9100, "{probe} port");
    }

    // SIGTERM: the peer leaves and saves within --leave-grace; Kubernetes must wait longer.
    let leave_grace = humantime::parse_duration(flag_value(&args, "--leave-grace"))
        .expect("--leave-grace parses");
    let grace = Duration::from_secs(
        pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds is set"),
    );
    assert!(
        grace > leave_grace,
        "terminationGracePeriodSeconds ({grace:?}) must exceed --leave-grace ({leave_grace:?})"
    );

    // Hardening and resources.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(peer["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(peer["securityContext"]["allowPrivilegeEscalation"], false);
    // The rest of the "restricted" Pod Security Standard.
    assert_eq!(
        peer["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                peer["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} is set"
            );
        }
    }

    // The data dir is the per-pod volume; the certs dir is a Secret.
    let mount_at = |dir: &str| {
        peer["volumeMounts"]
            .as_array()
            .expect("the peer has volume mounts")
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("nothing is mounted at {dir}"))["name"]
            .as_str()
            .expect("a mount names its volume")
            .to_string()
    };
    let data = mount_at(flag_value(&args, "--data-dir"));
    let templates = spec["volumeClaimTemplates"]
        .as_array()
        .expect("volumeClaimTemplates");
    assert!(
        templates
            .iter()
            .any(|t| t["metadata"]["name"] == data.as_str()),
        "--data-dir must be on a volumeClaimTemplate, so a restarted pod finds its checkpoint"
    );
    let certs = mount_at(flag_value(&args, "--certs"));
    let volume = pod["volumes"]
        .as_array()
        .expect("the pod has volumes")
        .iter()
        .find(|v| v["name"] == certs.as_str())
        .expect("the certs volume is declared");
    // Readable by the pod's group (fsGroup) and no one else: the peer runs as non-root.
    assert_eq!(
        volume["secret"]["defaultMode"].as_u64(),
        Some(0o440),
        "the key files' mode"
    );
    volume["secret"]["secretName"]
        .as_str()
        .expect("--certs is mounted from a Secret")
        .to_string()
}

fn check_disruption_budget(docs: &[Value]) {
    let set = find(docs, "StatefulSet", "rumor");
    let budget = docs
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .expect("a PodDisruptionBudget");
    let labels = &set["spec"]["template"]["metadata"]["labels"];
    let selector = budget["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("the budget selects by labels");
    for (key, value) in selector {
        assert_eq!(
            &labels[key], value,
            "the budget must select the peers' pods"
        );
    }
}

/// Runs make-secrets.sh for two pods into `dir`; checks the Secret it writes validates, is the
/// one the StatefulSet mounts, holds ca.pem and each pod's pair but never ca.key, that no key
/// reached the terminal, and that a peer loads its identity from the Secret's files.
fn check_secret(validator: &[&str], dir: &Path, secret_name: &str) {
    let script = repo().join("scripts/k8s/make-secrets.sh");
    let certs = dir.join("certs");
    let manifest = dir.join("secret.yaml");
    let args = [
        "--replicas",
        "2",
        "--dir",
        certs.to_str().expect("a UTF-8 path"),
        "--rumor",
        BIN,
        "--out",
        manifest.to_str().expect("a UTF-8 path"),
    ];
    let script_text = script.to_str().expect("a UTF-8 path");
    let mut with_script = vec![script_text];
    with_script.extend(args);
    let out = run(120, "bash", &with_script).expect("start bash");
    let printed = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "make-secrets.sh failed:\n{printed}");
    assert!(
        !printed.contains("PRIVATE KEY")
            && !printed.contains("LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t"),
        "make-secrets.sh printed a private key"
    );
    assert_valid(validator, &manifest);

    let docs = yaml_documents(&manifest);
    assert_eq!(docs.len(), 1, "one Secret");
    let secret = find(&docs, "Secret", secret_name);
    let data = secret["data"].as_object().expect("the Secret has data");
    let keys: BTreeSet<&str> = data.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = [
        "ca.pem",
        "rumor-0.pem",
        "rumor-0.key",
        "rumor-1.pem",
        "rumor-1.key",
    ]
    .into();
    assert_eq!(keys, expected, "the Secret's files (never ca.key)");

    // The mounted Secret, as a pod sees it: each pod loads its own identity by its name.
    let mounted = dir.join("mounted");
    std::fs::create_dir(&mounted).expect("create the mount dir");
    for (file, encoded) in data {
        let encoded = encoded.as_str().expect("base64 text");
        let decoded =
            run(30, "sh", &["-c", "printf %s \"$0\" | base64 -d", encoded]).expect("start base64");
        assert!(decoded.status.success(), "{file} is not base64");
        std::fs::write(mounted.join(file), &decoded.stdout).expect("write a Secret file");
    }
    for name in ["rumor-0", "rumor-1"] {
        rumor::certs::load_identity(&mounted, name)
            .unwrap_or_else(|e| panic!("pod {name} cannot load its identity: {e}"));
    }
}

#[test]
fn kubernetes_manifests_validate_and_keep_the_peers_invariants() {
    let validator = match validator() {
        Ok(validator) => validator,
        Err(reason) => {
            eprintln!("SKIPPED kubernetes manifests test: {reason}");
            return;
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rendered = rendered_manifests(dir.path());
    assert_valid(validator, &rendered);
    let docs = yaml_documents(&rendered);
    check_service(&docs);
    let secret_name = check_statefulset(&docs);
    check_disruption_budget(&docs);
    check_secret(validator, dir.path(), &secret_name);
}
