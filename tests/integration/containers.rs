//! The container deployment, run for real: the test builds the image from the Containerfile
//! with podman (`scripts/container/build.sh`, whose base root filesystem `base.sh` makes with
//! debootstrap and keeps under target/container-base), checks that it runs as the non-root user
//! and holds nothing but the binary, the libraries `ldd` names for it and its /etc files, then
//! starts `deploy/compose.yaml` with podman-compose: four peers in four containers, host
//! networking, on ports picked free at test time, certificates mounted read-only and data dirs
//! bind-mounted from a temp dir. Once every peer trains with all four members known, each
//! container's health check (`rumor health`, /healthz) and readiness (`rumor health --ready`,
//! asked inside the container) must pass; then SIGUSR1 (sent with `podman kill`) ends their
//! training, every container must exit 0, and `rumor compare` on the host must find their saved
//! models within 1e-4 of each other. It prints the image size, the build time, and the run's wall
//! time, accuracy and consensus distance.
//!
//! Podman runs with a containers.conf and storage.conf of the test's own (runc, cgroupfs, the
//! ulimits peers need, an image store, run dir and network dir in the temp dir), so the test
//! neither reads nor changes the machine's containers; a guard takes the compose project down
//! and removes every container even on failure. Skipped, with the reason printed, without root,
//! podman, runc, podman-compose, or debootstrap (unless the base root filesystem is cached), and
//! where podman cannot run a container.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const PEERS: usize = 4;
/// The user the image runs as (see the Containerfile).
const IMAGE_UID: u32 = 10001;
const BASE_IMAGE: &str = "localhost/rumor-base";
const IMAGE: &str = "localhost/rumor-test:latest";
/// Steps each peer must have taken before the test ends training (about two epochs of its
/// quarter of the synthetic set).
const STEPS_BEFORE_STOP: u64 = 150;
/// Longest wait for the four to train, and then for them to exit after SIGUSR1.
const PHASE_LIMIT: Duration = Duration::from_secs(120);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn base_cache() -> PathBuf {
    repo().join("target/container-base")
}

fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Why this test cannot run here, if it cannot (before podman itself is tried).
fn skip_reason() -> Option<String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if uid != "0" {
        return Some("not root".into());
    }
    if !works("podman", &["--version"]) {
        return Some("no podman (apt-get install -y podman)".into());
    }
    if !works("runc", &["--version"]) {
        return Some("no runc (apt-get install -y runc)".into());
    }
    let compose = Command::new("podman-compose")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| text(&o));
    let Some(compose) = compose else {
        return Some("no podman-compose (pip install podman-compose)".into());
    };
    match compose_version(&compose) {
        Some(v) if v >= (1, 1) => {}
        _ => {
            return Some(format!(
                "podman-compose older than 1.1 (Debian's 1.0.3 adds a bridge network to \
                 network_mode: host and podman refuses it; pip install podman-compose): {}",
                compose.trim()
            ))
        }
    }
    let cached = std::fs::read_dir(base_cache()).is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with("-minbase.tar"))
    });
    if !cached && !works("sh", &["-c", "command -v debootstrap"]) {
        return Some("no debootstrap and no cached base (apt-get install -y debootstrap)".into());
    }
    None
}

/// podman-compose's (major, minor) from its `--version` output ("podman-compose version 1.6.0",
/// 1.0.x: "podman-composer version  1.0.3").
fn compose_version(output: &str) -> Option<(u32, u32)> {
    let line = output.lines().find(|l| l.starts_with("podman-compose"))?;
    let mut parts = line.split_whitespace().last()?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[test]
fn compose_versions_are_read() {
    assert_eq!(
        compose_version("podman-compose version 1.6.0\npodman version 4.3.1\n"),
        Some((1, 6))
    );
    assert_eq!(
        compose_version("using podman version: 4.3.1\npodman-composer version  1.0.3\n"),
        Some((1, 0))
    );
    assert_eq!(compose_version("command not found"), None);
}

/// Podman and podman-compose confined to a temp dir: every command gets the test's
/// containers.conf and storage.conf, and runs under `timeout`, which kills its whole process
/// group when the limit passes.
struct Podman {
    conf: PathBuf,
    storage_conf: PathBuf,
}

impl Podman {
    fn new(dir: &Path) -> Self {
        for sub in ["storage", "run", "engine", "networks"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create a podman dir");
        }
        let conf = dir.join("containers.conf");
        std::fs::write(
            &conf,
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 log_driver = \"k8s-file\"\n\
                 [engine]\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 tmp_dir = \"{}\"\n\
                 [network]\n\
                 network_config_dir = \"{}\"\n",
                dir.join("engine").display(),
                dir.join("networks").display()
            ),
        )
        .expect("write containers.conf");
        let storage_conf = dir.join("storage.conf");
        std::fs::write(
            &storage_conf,
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("storage").display(),
                dir.join("run").display()
            ),
        )
        .expect("write storage.conf");
        Podman { conf, storage_conf }
    }

    /// Falls back to the vfs driver where overlay does not work (e.g. on an overlay root).
    fn use_vfs(&self) {
        let conf = std::fs::read_to_string(&self.storage_conf).expect("read storage.conf");
        std::fs::write(
            &self.storage_conf,
            conf.replace("driver = \"overlay\"", "driver = \"vfs\""),
        )
        .expect("write storage.conf");
    }

    fn command(&self, limit: Duration, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("timeout");
        c.args(["-k", "5", &limit.as_secs().to_string()])
            .arg(program)
            .env("CONTAINERS_CONF", &self.conf)
            .env("CONTAINERS_STORAGE_CONF", &self.storage_conf);
        c
    }

    fn podman(&self, limit: Duration, args: &[&str]) -> Output {
        self.command(limit, "podman")
            .args(args)
            .output()
            .expect("run podman")
    }

    /// `podman ARGS`, which must succeed; its stdout, trimmed.
    fn podman_ok(&self, limit: Duration, args: &[&str]) -> String {
        let out = self.podman(limit, args);
        assert!(
            out.status.success(),
            "podman {} failed: {}",
            args.join(" "),
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// The compose project of one run: `podman-compose` with the run's environment. Dropping it
/// takes the project down and removes whatever containers and pods are left in the test's own
/// store, so nothing the test started outlives it.
struct Project {
    podman: Podman,
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, limit: Duration, args: &[&str]) -> Output {
        self.podman
            .command(limit, "podman-compose")
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(repo().join("deploy/compose.yaml"))
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("run podman-compose")
    }

    /// The container of service `peer-K`.
    fn container(&self, k: usize) -> String {
        let out = self.podman.podman(
            Duration::from_secs(30),
            &[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.name),
                "--filter",
                &format!("label=com.docker.compose.service=peer-{k}"),
                "--format",
                "{{.Names}}",
            ],
        );
        let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !name.is_empty() && !name.contains('\n'),
            "no single container for peer-{k}: {}",
            text(&out)
        );
        name
    }

    /// `running`, `exited`, ... of a container.
    fn state(&self, container: &str) -> (String, i64) {
        let out = self.podman.podman(
            Duration::from_secs(30),
            &[
                "inspect",
                "--format",
                "{{.State.Status}} {{.State.ExitCode}}",
                container,
            ],
        );
        let s = String::from_utf8_lossy(&out.stdout);
        let mut words = s.split_whitespace();
        let status = words.next().unwrap_or("unknown").to_string();
        let code = words.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
        (status, code)
    }

    /// Prints the last lines of every peer's log, then panics with `what`.
    fn fail(&self, containers: &[String], what: &str) -> ! {
        for c in containers {
            let out = self
                .podman
                .podman(Duration::from_secs(30), &["logs", "--tail", "25", c]);
            eprintln!("--- {c} ---\n{}", text(&out));
        }
        panic!("{what}");
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(Duration::from_secs(90), &["down"]);
        let _ = self
            .podman
            .podman(Duration::from_secs(60), &["rm", "--all", "--force"]);
        let _ = self
            .podman
            .podman(Duration::from_secs(60), &["pod", "rm", "--all", "--force"]);
        let _ = self
            .podman
            .podman(Duration::from_secs(60), &["rmi", "--all", "--force"]);
    }
}

/// `n` distinct ports free for both UDP and TCP on loopback right now.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            ports.push(port);
            held.push((udp, tcp));
        }
    }
    ports
}

/// A peer's `/status` from its metrics address, if it answers.
fn status(port: u16) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200"))
        .then(|| serde_json::from_str(body).ok())
        .flatten()
}

fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd.output().expect(what);
    assert!(out.status.success(), "{what} failed: {}", text(&out));
    out
}

#[test]
fn compose_cluster_of_four_containers_trains_and_ends_consistent() {
    let _serial = crate::common::heavy_test_lock();
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED containers test: {reason}");
        return;
    }
    let test_began = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("rumor-containers-")
        .tempdir()
        .expect("temp dir");
    let podman = Podman::new(&tmp.path().join("podman"));
    let mut info = podman.podman(Duration::from_secs(60), &["info"]);
    if !info.status.success() {
        podman.use_vfs();
        info = podman.podman(Duration::from_secs(60), &["info"]);
    }
    if !info.status.success() {
        eprintln!(
            "SKIPPED containers test: podman cannot start here: {}",
            text(&info)
        );
        return;
    }
    let mut project = Project {
        podman,
        name: format!("rumortest{}", std::process::id()),
        env: Vec::new(),
    };

    // The base image (debootstrap the first time, then the cached root filesystem), and a
    // container from it, which is where a machine that cannot run containers says so.
    let began = Instant::now();
    run_ok(
        project
            .podman
            .command(
                Duration::from_secs(600),
                repo().join("scripts/container/base.sh"),
            )
            .args(["--tag", BASE_IMAGE]),
        "scripts/container/base.sh",
    );
    eprintln!("base image ready in {:.1?}", began.elapsed());
    let probe = project.podman.podman(
        Duration::from_secs(60),
        &["run", "--rm", "--network", "host", BASE_IMAGE, "true"],
    );
    if !probe.status.success() {
        eprintln!(
            "SKIPPED containers test: `podman run` fails here: {}",
            text(&probe)
        );
        return;
    }

    let began = Instant::now();
    run_ok(
        project
            .podman
            .command(
                Duration::from_secs(300),
                repo().join("scripts/container/build.sh"),
            )
            .args(["--bin", BIN, "--tag", IMAGE, "--base", BASE_IMAGE]),
        "scripts/container/build.sh",
    );
    let build_time = began.elapsed();
    let inspect = project.podman.podman_ok(
        Duration::from_secs(30),
        &[
            "image",
            "inspect",
            "--format",
            "{{.Size}} {{.Config.User}}",
            IMAGE,
        ],
    );
    let (size, user) = inspect.split_once(' ').expect("size and user");
    let size: u64 = size.parse().expect("image size in bytes");
    assert_eq!(
        user,
        format!("{IMAGE_UID}:{IMAGE_UID}"),
        "the image must run as its non-root user"
    );
    let version = project.podman.podman_ok(
        Duration::from_secs(60),
        &["run", "--rm", "--network", "host", IMAGE, "--version"],
    );
    eprintln!(
        "image {IMAGE}: {:.1} MB ({size} bytes), built in {build_time:.1?}, runs as {user}, says {}",
        size as f64 / 1e6,
        version
    );

    // What the image holds: the binary, the shared libraries `ldd` names for it on this host
    // (the base is of the host's Debian release), the user's /etc files, and nothing else.
    let created = project
        .podman
        .podman_ok(Duration::from_secs(60), &["create", IMAGE]);
    let export = tmp.path().join("image.tar");
    project.podman.podman_ok(
        Duration::from_secs(120),
        &["export", "-o", &export.to_string_lossy(), &created],
    );
    let _ = project
        .podman
        .podman(Duration::from_secs(30), &["rm", "--force", &created]);
    let listing = run_ok(Command::new("tar").arg("-tf").arg(&export), "tar -tf");
    let _ = std::fs::remove_file(&export);
    let mut files: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .filter(|l| !l.is_empty() && !l.ends_with('/'))
        .map(|l| match l.rsplit_once('/') {
            // Libraries by file name: the host may spell their directory differently.
            Some((dir, file)) if dir.contains("lib") => file.to_string(),
            _ => l,
        })
        .collect();
    files.sort();
    let ldd = run_ok(Command::new("ldd").arg(BIN), "ldd on the host");
    let mut expected: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(|w| w.rsplit('/').next().unwrap_or(w).to_string())
        .chain(
            [
                "etc/group",
                "etc/nsswitch.conf",
                "etc/passwd",
                "usr/local/bin/rumor",
            ]
            .map(String::from),
        )
        .collect();
    expected.sort();
    assert_eq!(
        files, expected,
        "the image should hold the binary, what ldd names and /etc/{{passwd,group,nsswitch.conf}}"
    );
    eprintln!("image files: {}", files.join(" "));

    // Certificates and data dirs, readable and writable by the image's user.
    let certs = tmp.path().join("certs");
    let data = tmp.path().join("data");
    run_ok(
        Command::new(BIN)
            .args(["certs", "init", "--cluster", "containers", "--dir"])
            .arg(&certs),
        "rumor certs init",
    );
    run_ok(
        Command::new(BIN)
            .args(["certs", "issue", "--count", &PEERS.to_string(), "--dir"])
            .arg(&certs),
        "rumor certs issue --count",
    );
    let names: Vec<String> = (0..PEERS).map(|k| format!("peer-{k}")).collect();
    for name in &names {
        std::fs::create_dir_all(data.join(name)).expect("create a data dir");
        std::os::unix::fs::chown(data.join(name), Some(IMAGE_UID), Some(IMAGE_UID))
            .expect("chown a data dir");
    }
    for entry in std::fs::read_dir(&certs).expect("list certs") {
        let path = entry.expect("certs entry").path();
        std::os::unix::fs::chown(&path, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown a cert");
    }
    std::os::unix::fs::chown(&certs, Some(IMAGE_UID), Some(IMAGE_UID)).expect("chown certs");

    let ports = free_ports(2 * PEERS);
    let mut env: Vec<(String, String)> = vec![
        ("RUMOR_IMAGE".into(), IMAGE.into()),
        ("RUMOR_CERTS".into(), certs.display().to_string()),
        ("RUMOR_DATA".into(), data.display().to_string()),
        ("RUMOR_HOST".into(), "127.0.0.1".into()),
        ("RUMOR_DATASET".into(), "synthetic".into()),
        ("RUMOR_MODEL".into(), "784-128-10".into()),
        // Training ends when the test sends SIGUSR1; the budget and the time box only bound a
        // run whose signal went astray.
        ("RUMOR_EPOCHS".into(), "1000".into()),
        ("RUMOR_MAX_TRAIN_TIME".into(), "3m".into()),
        ("RUMOR_EVAL_EVERY".into(), "0".into()),
    ];
    for k in 0..PEERS {
        env.push((format!("RUMOR_PORT_{k}"), ports[k].to_string()));
        env.push((
            format!("RUMOR_METRICS_PORT_{k}"),
            ports[PEERS + k].to_string(),
        ));
    }
    project.env = env;

    let up_began = Instant::now();
    let up = project.compose(Duration::from_secs(120), &["up", "-d"]);
    assert!(
        up.status.success(),
        "podman-compose up failed: {}",
        text(&up)
    );
    let containers: Vec<String> = (0..PEERS).map(|k| project.container(k)).collect();

    // Every peer training, with all four members known and some steps behind it.
    let metrics = &ports[PEERS..];
    let end = Instant::now() + PHASE_LIMIT;
    loop {
        let views: Vec<Option<serde_json::Value>> = metrics.iter().map(|p| status(*p)).collect();
        let ready = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                v["peer"]["lifecycle"] == "training"
                    && v["peer"]["peers_known"].as_u64() == Some(PEERS as u64)
                    && v["peer"]["step"].as_u64() >= Some(STEPS_BEFORE_STOP)
            })
        });
        if ready {
            break;
        }
        if let Some(c) = containers.iter().find(|c| project.state(c).0 != "running") {
            project.fail(
                &containers,
                &format!("{c} stopped before training was ended"),
            );
        }
        if Instant::now() >= end {
            let summary: Vec<String> = views
                .iter()
                .map(|v| match v {
                    Some(v) => format!(
                        "{} {} known {} step {}",
                        v["peer"]["name"],
                        v["peer"]["lifecycle"],
                        v["peer"]["peers_known"],
                        v["peer"]["step"]
                    ),
                    None => "no answer".into(),
                })
                .collect();
            project.fail(
                &containers,
                &format!("peers not all training after {PHASE_LIMIT:?}: {summary:?}"),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("all four training {:.1?} after up", up_began.elapsed());

    // The compose health check (/healthz), run by hand: podman schedules health checks with
    // systemd timers, which a machine without systemd does not have. And readiness (/readyz),
    // asked from inside each container as a Kubernetes exec probe would.
    for (c, port) in containers.iter().zip(metrics) {
        let health = project
            .podman
            .podman(Duration::from_secs(30), &["healthcheck", "run", c]);
        let ready = project.podman.podman(
            Duration::from_secs(30),
            &[
                "exec",
                c,
                "/usr/local/bin/rumor",
                "health",
                "--ready",
                &format!("127.0.0.1:{port}"),
            ],
        );
        if !health.status.success() || !ready.status.success() {
            project.fail(
                &containers,
                &format!(
                    "{c}: health check {}, readiness {}",
                    text(&health),
                    text(&ready)
                ),
            );
        }
    }

    // End training as a batch scheduler would before a job's time limit; the peers drain,
    // save and exit 0.
    let mut kill = vec!["kill", "--signal", "USR1"];
    kill.extend(containers.iter().map(String::as_str));
    project.podman.podman_ok(Duration::from_secs(30), &kill);
    let end = Instant::now() + PHASE_LIMIT;
    let codes = loop {
        let states: Vec<(String, i64)> = containers.iter().map(|c| project.state(c)).collect();
        if states.iter().all(|(s, _)| s == "exited" || s == "stopped") {
            break states.into_iter().map(|(_, code)| code).collect::<Vec<_>>();
        }
        if Instant::now() >= end {
            project.fail(
                &containers,
                &format!("peers still running {PHASE_LIMIT:?} after SIGUSR1: {states:?}"),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let wall = up_began.elapsed();
    if codes.iter().any(|c| *c != 0) {
        project.fail(&containers, &format!("exit codes {codes:?}"));
    }

    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let distance = crate::common::compare_checkpoints(&data, &name_refs);
    let mut accuracies = Vec::new();
    for name in &names {
        let path = data.join(name).join("summary.json");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read a peer's summary"))
                .expect("parse a peer's summary");
        let peer = &summary["peers"][0];
        assert_eq!(peer["drained"], true, "{name} did not drain: {peer}");
        accuracies.push(peer["test_accuracy"].as_f64().expect("test accuracy"));
    }
    let mean = accuracies.iter().sum::<f64>() / accuracies.len() as f64;
    let min = accuracies.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "compose run: 4 containers, wall {wall:.1?} from up to the last exit; test accuracy \
         mean {:.2}% min {:.2}%; consensus distance {distance:.3e}; image {:.1} MB; \
         test took {:.1?}",
        mean * 100.0,
        min * 100.0,
        size as f64 / 1e6,
        test_began.elapsed()
    );
    assert!(distance < 1e-4, "consensus distance {distance}");
    assert!(min > 0.5, "accuracy {accuracies:?}");

    let down = project.compose(Duration::from_secs(90), &["down"]);
    assert!(
        down.status.success(),
        "podman-compose down failed: {}",
        text(&down)
    );
    let left = project
        .podman
        .podman_ok(Duration::from_secs(30), &["ps", "-aq"]);
    assert!(left.is_empty(), "containers left after down: {left}");
}
