//! `scripts/slurm/rumor.sbatch` and `scripts/slurm/churn.sh` on a real Slurm cluster that the
//! test stands up on this one host: munged, slurmctld and four slurmd "nodes" (n1..n4, each its
//! own daemon on its own port, all at 127.0.0.1), with their key, state, spool and logs in a
//! temp dir. Three jobs of four peers:
//!
//! 1. a plain run, two tasks on each of two nodes (two steps share a node, on two ports):
//!    every peer drains and the checkpoints agree (consensus distance < 1e-4);
//! 2. one task per node from here on; one peer's job step is cancelled mid-training: the
//!    other three see it dead and keep training; then SIGUSR1 to the batch script (as
//!    `--signal=B:USR1@120` sends before the time limit) ends training on every step, and the
//!    three drain and agree;
//! 3. churn.sh kills one step after its first checkpoint; the batch script starts it again
//!    with `--resume` and all four end drained and in agreement.
//!
//! Prints the time from `sbatch` until every peer trains, the final test accuracy and the
//! consensus distances. Skipped, with the reason printed, when not root or when munged,
//! slurmctld, slurmd or the Slurm client commands are missing (Debian: `apt-get install
//! slurmctld slurmd slurm-client munge`). The daemons, and anything left of the jobs, are
//! killed by pid when the test ends, failed or not.

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rumor");
const NODES: usize = 4;

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/slurm")
        .join(name)
}

fn found(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "command -v {program} || test -x /usr/sbin/{program}"
        ))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why this test cannot run here, if it cannot.
fn skip_reason() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root (the Slurm daemons run as root)".into());
    }
    for (program, package) in [
        ("munged", "munge"),
        ("slurmctld", "slurmctld"),
        ("slurmd", "slurmd"),
        ("sbatch", "slurm-client"),
        ("srun", "slurm-client"),
        ("squeue", "slurm-client"),
        ("scancel", "slurm-client"),
        ("scontrol", "slurm-client"),
        ("sinfo", "slurm-client"),
    ] {
        if !found(program) {
            return Some(format!("no {program} (apt-get install -y {package})"));
        }
    }
    None
}

use crate::common::held_within as poll;

/// The last `n` lines of the file at `path` (empty when unreadable).
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `n` free TCP ports on loopback (held together while chosen, so they differ).
fn free_tcp_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free TCP port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A UDP port P with P..P+NODES free on every address: rank R listens on P+R.
fn free_udp_base() -> u16 {
    for _ in 0..100 {
        let first = UdpSocket::bind("0.0.0.0:0").expect("bind a free UDP port");
        let base = first.local_addr().expect("local address").port();
        if usize::from(base) + NODES > usize::from(u16::MAX) {
            continue;
        }
        let rest: Vec<_> = (1..NODES as u16)
            .map(|i| UdpSocket::bind(("0.0.0.0", base + i)))
            .collect();
        if rest.iter().all(|s| s.is_ok()) {
            return base;
        }
    }
    panic!("no run of {NODES} free UDP ports found");
}

/// The pids of processes whose environment holds `entry` (e.g. `SLURM_CONF=/tmp/x/slurm.conf`):
/// everything started under this test's cluster, daemons, job steps and peers alike.
fn pids_with_env(entry: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == entry.as_bytes()))
        })
        .collect()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A one-host Slurm cluster in a temp dir. Dropping it cancels its jobs, stops its daemons
/// and kills whatever process still carries its config in its environment.
struct Slurm {
    dir: PathBuf,
    conf: PathBuf,
    daemons: Vec<(String, Child)>,
}

impl Slurm {
    /// Writes a munge key and slurm.conf under `dir`, starts munged, slurmctld and one slurmd
    /// per node, and waits until every node is idle.
    fn start(dir: &Path) -> Slurm {
        let mut slurm = Slurm {
            dir: dir.to_path_buf(),
            conf: dir.join("slurm.conf"),
            daemons: Vec::new(),
        };
        for sub in ["munge", "state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create the cluster's dirs");
        }

        // munged: a fresh 1024-byte key readable by its owner only, every path in the temp dir.
        let key = dir.join("munge/munge.key");
        let mut bytes = vec![0u8; 1024];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .expect("read a munge key from /dev/urandom");
        std::fs::write(&key, &bytes).expect("write the munge key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400))
            .expect("chmod 0400 the munge key");
        let socket = dir.join("munge/munge.socket");
        let munged = Command::new("munged")
            .args(["--foreground", "--force"])
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--log-file={}",
                dir.join("log/munged.log").display()
            ))
            .arg(format!(
                "--pid-file={}",
                dir.join("munge/munged.pid").display()
            ))
            .arg(format!(
                "--seed-file={}",
                dir.join("munge/munged.seed").display()
            ))
            .env("SLURM_CONF", &slurm.conf)
            .stdout(Stdio::null())
            .stderr(slurm.log_file("munged.stderr"))
            .spawn()
            .expect("start munged");
        slurm.daemons.push(("munged".into(), munged));
        assert!(
            poll(Duration::from_secs(10), || socket.exists()),
            "munged made no socket within 10 s: {}",
            tail(&dir.join("log/munged.log"), 10)
        );

        let ports = free_tcp_ports(NODES + 1);
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .expect("read the hostname")
            .trim()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let d = dir.display();
        let mut conf = format!(
            "ClusterName=rumortest\n\
             SlurmctldHost={host}(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             AuthType=auth/munge\n\
             AuthInfo=socket={socket}\n\
             CredType=cred/munge\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             StateSaveLocation={d}/state\n\
             SlurmdSpoolDir={d}/spool/%n\n\
             SlurmctldPidFile={d}/slurmctld.pid\n\
             SlurmdPidFile={d}/slurmd-%n.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd-%n.log\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             JobCompType=jobcomp/none\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core_Memory\n\
             DefMemPerCPU=200\n\
             SlurmdParameters=config_overrides\n\
             ReturnToService=2\n\
             MpiDefault=none\n\
             SwitchType=switch/none\n\
             MailProg=/bin/true\n",
            ctld = ports[0],
            socket = socket.display(),
        );
        for (i, port) in ports[1..].iter().enumerate() {
            conf += &format!(
                "NodeName=n{} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs=2 \
                 RealMemory=1000 State=UNKNOWN\n",
                i + 1
            );
        }
        conf += &format!(
            "PartitionName=test Nodes=n[1-{NODES}] Default=YES MaxTime=INFINITE State=UP\n"
        );
        std::fs::write(&slurm.conf, conf).expect("write slurm.conf");

        let ctld = Command::new("slurmctld")
            .arg("-D")
            .arg("-f")
            .arg(&slurm.conf)
            .env("SLURM_CONF", &slurm.conf)
            .stdout(Stdio::null())
            .stderr(slurm.log_file("slurmctld.stderr"))
            .spawn()
            .expect("start slurmctld");
        slurm.daemons.push(("slurmctld".into(), ctld));
        for i in 1..=NODES {
            let node = format!("n{i}");
            let slurmd = Command::new("slurmd")
                .args(["-D", "-N", &node, "-f"])
                .arg(&slurm.conf)
                .env("SLURM_CONF", &slurm.conf)
                .stdout(Stdio::null())
                .stderr(slurm.log_file(&format!("slurmd-{node}.stderr")))
                .spawn()
                .expect("start slurmd");
            slurm.daemons.push((format!("slurmd {node}"), slurmd));
        }
        let idle = poll(Duration::from_secs(60), || {
            let out = slurm.stdout(&["sinfo", "-h", "-o", "%D %t"]);
            out.lines()
                .filter_map(|l| l.split_once(' '))
                .filter(|(_, state)| *state == "idle")
                .filter_map(|(n, _)| n.parse::<usize>().ok())
                .sum::<usize>()
                == NODES
        });
        assert!(
            idle,
            "the {NODES} nodes were not idle within 60 s: {}\nslurmctld log:\n{}\nslurmd n1 log:\n{}",
            slurm.stdout(&["sinfo"]),
            tail(&dir.join("log/slurmctld.log"), 20),
            tail(&dir.join("log/slurmd-n1.log"), 20),
        );
        slurm
    }

    fn log_file(&self, name: &str) -> Stdio {
        std::fs::File::create(self.dir.join("log").join(name))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    }

    /// A Slurm client command against this cluster, killed after 30 s.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", "30"])
            .args(args)
            .env("SLURM_CONF", &self.conf);
        cmd
    }

    /// The stdout of a client command (empty when it fails).
    fn stdout(&self, args: &[&str]) -> String {
        self.command(args)
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Field `key` of `scontrol show job`, e.g. JobState or ExitCode (empty once the job is
    /// forgotten).
    fn job_field(&self, job: &str, key: &str) -> String {
        let out = self.stdout(&["scontrol", "show", "job", job, "-o"]);
        out.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .to_string()
    }

    fn job_active(&self, job: &str) -> bool {
        active(&self.job_field(job, "JobState"))
    }

    /// The step id (`JOB.STEP`) of the running step named `name`.
    fn step_named(&self, job: &str, name: &str) -> Option<String> {
        self.stdout(&["squeue", "-s", "-j", job, "-h", "-o", "%i %j"])
            .lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(_, n)| n.trim() == name)
            .map(|(id, _)| id.to_string())
    }

    fn run(&self, args: &[&str]) {
        let out = self.command(args).output().expect("run a Slurm command");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Slurm {
    fn drop(&mut self) {
        let _ = self
            .command(&["scancel", "--partition=test"])
            .stderr(Stdio::null())
            .status();
        poll(Duration::from_secs(20), || {
            self.stdout(&["squeue", "-h", "-o", "%i"]).trim().is_empty()
        });
        for (_, child) in &mut self.daemons {
            signal(child.id(), "-TERM");
        }
        for (what, child) in &mut self.daemons {
            if !poll(Duration::from_secs(5), || {
                child.try_wait().ok().flatten().is_some()
            }) {
                eprintln!("{what} ignored SIGTERM for 5 s: killed");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Job steps, peers and slurmscriptd inherit SLURM_CONF from the daemons or sbatch.
        let entry = format!("SLURM_CONF={}", self.conf.display());
        for pid in pids_with_env(&entry) {
            signal(pid, "-KILL");
        }
    }
}

/// One rank's row of ranks.tsv.
#[derive(Debug)]
struct Rank {
    node: String,
    /// The exit status of its (last) step.
    exit: String,
    restarts: u32,
    drained: bool,
}

impl Rank {
    fn ended_well(&self) -> bool {
        self.exit == "0" && self.drained
    }
}

/// A job's output: RUMOR_OUT of the batch script, and its stdout in `job.out` beside it.
struct Run {
    out: PathBuf,
}

impl Run {
    fn peer(&self, rank: usize) -> PathBuf {
        self.out.join(format!("peer-{rank}"))
    }

    fn log(&self, rank: usize) -> String {
        std::fs::read_to_string(self.peer(rank).join("peer.log")).unwrap_or_default()
    }

    fn training(&self, rank: usize) -> bool {
        self.log(rank).contains("training starts")
    }

    /// The last line of rank `rank`'s metrics.jsonl.
    fn metrics(&self, rank: usize) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.peer(rank).join("metrics.jsonl")).ok()?;
        text.lines()
            .rev()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    }

    fn step(&self, rank: usize) -> u64 {
        self.metrics(rank)
            .and_then(|m| m["step"].as_u64())
            .unwrap_or(0)
    }

    /// The rows of ranks.tsv, by rank.
    fn ranks(&self) -> Vec<Rank> {
        let text = std::fs::read_to_string(self.out.join("ranks.tsv")).expect("read ranks.tsv");
        text.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                assert_eq!(f.len(), 6, "ranks.tsv line {l:?}");
                Rank {
                    node: f[1].to_string(),
                    exit: f[3].to_string(),
                    restarts: f[4].parse().expect("restarts in ranks.tsv"),
                    drained: f[5] == "yes",
                }
            })
            .collect()
    }

    fn distance(&self, file: &str) -> f64 {
        let text = std::fs::read_to_string(self.out.join(file))
            .unwrap_or_else(|e| panic!("read {file}: {e}; job output:\n{}", self.job_output()));
        let v: serde_json::Value = serde_json::from_str(&text).expect("compare output is JSON");
        v["consensus_distance"]
            .as_f64()
            .unwrap_or_else(|| panic!("no consensus_distance in {file}: {text}"))
    }

    fn accuracy(&self, rank: usize) -> f64 {
        let path = self.peer(rank).join("summary.json");
        let text = std::fs::read_to_string(&path).expect("read a peer's summary.json");
        let v: serde_json::Value = serde_json::from_str(&text).expect("summary.json is JSON");
        v["peers"][0]["test_accuracy"]
            .as_f64()
            .expect("test_accuracy in summary.json")
    }

    fn job_output(&self) -> String {
        let mut s = tail(&self.out.join("job.out"), 30);
        for r in 0..NODES {
            s += &format!(
                "\n--- peer-{r}:\n{}",
                tail(&self.peer(r).join("peer.log"), 8)
            );
        }
        s
    }
}

/// The environment rumor.sbatch reads, for a run whose output goes to `out`.
fn rumor_env(cmd: &mut Command, certs: &Path, out: &Path, port: u16) {
    cmd.env("RUMOR_BIN", BIN)
        .env("RUMOR_CERTS", certs)
        .env("RUMOR_OUT", out)
        .env("RUMOR_PORT", port.to_string());
}

/// Submits rumor.sbatch for `NODES` tasks spread evenly on `nodes` nodes, with `peer_args`;
/// returns the job id.
fn submit(slurm: &Slurm, certs: &Path, run: &Run, nodes: usize, peer_args: &[&str]) -> String {
    std::fs::create_dir_all(&run.out).expect("create the run's dir");
    let job_out = run.out.join("job.out");
    let (nodes, per_node) = (nodes.to_string(), (NODES / nodes).to_string());
    let mut cmd = slurm.command(&["sbatch", "--parsable", "--nodes", &nodes]);
    cmd.args(["--ntasks-per-node", &per_node]);
    cmd.arg("--output")
        .arg(&job_out)
        .arg(script("rumor.sbatch"))
        .args(peer_args);
    rumor_env(&mut cmd, certs, &run.out, free_udp_base());
    let out = cmd.output().expect("run sbatch");
    assert!(
        out.status.success(),
        "sbatch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8_lossy(&out.stdout).trim().to_string();
    job.split(';').next().unwrap_or_default().to_string()
}

fn wait_job_end(slurm: &Slurm, job: &str, run: &Run, limit: Duration) {
    assert!(
        poll(limit, || !slurm.job_active(job)),
        "job {job} still running after {limit:?}:\n{}",
        run.job_output()
    );
}

/// Whether a job in `state` (scontrol's JobState) has not ended yet.
fn active(state: &str) -> bool {
    matches!(
        state,
        "PENDING" | "CONFIGURING" | "RUNNING" | "COMPLETING" | "SUSPENDED" | "SIGNALING"
    )
}

/// A time measured by polling, or that it was missed.
fn seen(t: Option<Duration>) -> String {
    t.map_or("(not seen)".into(), |t| format!("{t:.1?}"))
}

/// Fashion-MNIST when installed, else the synthetic set (saying so).
fn dataset() -> &'static str {
    if Path::new(rumor::data::FASHION_MNIST_DIR).exists() {
        "fashion-mnist"
    } else {
        eprintln!(
            "NOTE: {} is absent (apt-get install dataset-fashion-mnist); the Slurm test uses \
             the synthetic dataset",
            rumor::data::FASHION_MNIST_DIR
        );
        "synthetic"
    }
}

#[test]
fn slurm_jobs_of_rumor_peers_end_consistent_with_a_cancelled_step_and_a_restarted_one() {
    let _serial = crate::common::heavy_test_lock();
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED slurm test: {reason}");
        return;
    }
    let began = Instant::now();
    let tmp = tempfile::tempdir().expect("temp dir");
    let slurm = Slurm::start(&tmp.path().join("cluster"));
    eprintln!(
        "slurm cluster of {NODES} nodes up in {:.1?}",
        began.elapsed()
    );
    let certs = tmp.path().join("certs");
    // As the top of rumor.sbatch says: one CA, then a certificate per rank.
    let certs_dir = certs.to_string_lossy();
    let count = NODES.to_string();
    for args in [
        ["init", "--dir", &certs_dir, "--cluster", "slurmtest"],
        ["issue", "--dir", &certs_dir, "--count", &count],
    ] {
        let out = Command::new(BIN)
            .arg("certs")
            .args(args)
            .output()
            .expect("run rumor certs");
        assert!(
            out.status.success(),
            "rumor certs {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = dataset();

    // 1. A plain run to the end of its budget, two peers on each of two nodes.
    let run = Run {
        out: tmp.path().join("plain"),
    };
    let submitted = Instant::now();
    let job = submit(
        &slurm,
        &certs,
        &run,
        2,
        &["--dataset", data, "--epochs", "2"],
    );
    let (mut to_running, mut to_training) = (None, None);
    let ended = poll(Duration::from_secs(240), || {
        let state = slurm.job_field(&job, "JobState");
        if to_running.is_none() && state == "RUNNING" {
            to_running = Some(submitted.elapsed());
        }
        if to_training.is_none() && (0..NODES).all(|r| run.training(r)) {
            to_training = Some(submitted.elapsed());
        }
        !active(&state)
    });
    assert!(
        ended,
        "job {job} still running after 240 s:\n{}",
        run.job_output()
    );
    let wall = submitted.elapsed();
    let state = slurm.job_field(&job, "JobState");
    assert_eq!(state, "COMPLETED", "job {job}:\n{}", run.job_output());
    let ranks = run.ranks();
    assert_eq!(ranks.len(), NODES, "ranks.tsv: {ranks:?}");
    assert!(ranks.iter().all(Rank::ended_well), "{ranks:?}");
    let nodes: Vec<&str> = ranks.iter().map(|r| r.node.as_str()).collect();
    assert_eq!(
        nodes,
        ["n1", "n1", "n2", "n2"],
        "ranks placed in task order"
    );
    let d = run.distance("compare.json");
    assert!(d < 1e-4, "consensus distance {d} among the {NODES} peers");
    let accuracy = run.accuracy(0);
    eprintln!(
        "plain job: sbatch to job running {}, to every peer training {}, job done in \
         {wall:.1?}; {data} test accuracy {:.2}%, consensus distance {d:.3e} over {NODES} peers",
        seen(to_running),
        seen(to_training),
        accuracy * 100.0
    );

    // 2. Peers that train until told: cancel peer-3's step, check the others carry on, then
    //    SIGUSR1 to the batch script ends them all.
    let run = Run {
        out: tmp.path().join("cancel"),
    };
    let submitted = Instant::now();
    let job = submit(
        &slurm,
        &certs,
        &run,
        NODES,
        &[
            "--dataset",
            data,
            "--epochs",
            "1000",
            "--max-train-time",
            "5m",
        ],
    );
    assert!(
        poll(Duration::from_secs(120), || (0..NODES)
            .all(|r| run.training(r) && run.step(r) >= 20)),
        "the peers did not all train within 120 s:\n{}",
        run.job_output()
    );
    eprintln!(
        "cancel job: sbatch to every peer 20 steps in {:.1?}",
        submitted.elapsed()
    );
    let victim = NODES - 1;
    let step = slurm
        .step_named(&job, &format!("peer-{victim}"))
        .unwrap_or_else(|| panic!("no step peer-{victim} in job {job}"));
    slurm.run(&["scancel", &step]);
    let cancelled = Instant::now();
    let survivors: Vec<usize> = (0..NODES).filter(|&r| r != victim).collect();
    let steps_at_cancel: Vec<u64> = survivors.iter().map(|&r| run.step(r)).collect();
    let carried_on = poll(Duration::from_secs(60), || {
        survivors.iter().zip(&steps_at_cancel).all(|(&r, &s)| {
            run.metrics(r).is_some_and(|m| {
                m["live_members"].as_u64() == Some(survivors.len() as u64)
                    && m["lifecycle"] == "training"
                    && m["step"].as_u64().unwrap_or(0) >= s + 50
            })
        })
    });
    assert!(
        carried_on,
        "the survivors did not see peer-{victim} gone and train on within 60 s:\n{}",
        run.job_output()
    );
    eprintln!(
        "cancel job: step {step} cancelled; the other {} saw it gone and trained 50 more steps \
         within {:.1?}",
        survivors.len(),
        cancelled.elapsed()
    );
    slurm.run(&["scancel", "--batch", "--signal=USR1", &job]);
    wait_job_end(&slurm, &job, &run, Duration::from_secs(120));
    let ranks = run.ranks();
    for &r in &survivors {
        assert!(ranks[r].ended_well(), "rank {r}: {:?}", ranks[r]);
        assert!(
            run.log(r).contains("end of training requested"),
            "peer-{r} never got SIGUSR1:\n{}",
            run.job_output()
        );
    }
    assert!(
        ranks[victim].exit != "0" && !ranks[victim].drained,
        "the cancelled rank: {:?}",
        ranks[victim]
    );
    let d = run.distance("compare.json");
    assert!(d < 1e-4, "consensus distance {d} among the survivors");
    eprintln!(
        "cancel job: SIGUSR1 forwarded, the {} survivors drained: test accuracy {:.2}%, \
         consensus distance {d:.3e}",
        survivors.len(),
        run.accuracy(0) * 100.0
    );

    // 3. churn.sh: peer-3 killed after its first checkpoint, restarted with --resume.
    let run = Run {
        out: tmp.path().join("churn"),
    };
    std::fs::create_dir_all(&run.out).expect("create the churn run's dir");
    let config = tmp.path().join("checkpoint-often.toml");
    std::fs::write(&config, "[peer]\ncheckpoint_interval = \"1s\"\n").expect("write a config");
    let config = config.to_string_lossy().into_owned();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "300"])
        .arg(script("churn.sh"))
        .args(["--nodes", "4", "--ntasks-per-node", "1", "--output"])
        .arg(run.out.join("job.out"))
        .args([
            "--",
            "--config",
            &config,
            "--dataset",
            data,
            "--epochs",
            "4",
        ])
        .env("SLURM_CONF", &slurm.conf)
        .env("CHURN_AFTER", "2")
        .env("CHURN_TIMEOUT", "120");
    rumor_env(&mut cmd, &certs, &run.out, free_udp_base());
    let started = Instant::now();
    let out = cmd.output().expect("run churn.sh");
    let said = String::from_utf8_lossy(&out.stdout);
    eprintln!("churn.sh took {:.1?}:\n{said}", started.elapsed());
    assert!(
        out.status.success(),
        "churn.sh failed ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        run.job_output()
    );
    let ranks = run.ranks();
    assert_eq!(
        ranks[victim].restarts, 1,
        "peer-{victim} restarted once: {ranks:?}"
    );
    assert!(
        run.log(victim).contains("resuming from checkpoint"),
        "peer-{victim} did not resume from its checkpoint:\n{}",
        run.job_output()
    );
    assert!(ranks.iter().all(Rank::ended_well), "{ranks:?}");
    let d = run.distance("compare.json");
    assert!(d < 1e-4, "consensus distance {d} after the restart");
    eprintln!(
        "churn job: peer-{victim} killed and resumed; all {NODES} drained, test accuracy \
         {:.2}%, consensus distance {d:.3e}",
        run.accuracy(0) * 100.0
    );
    drop(slurm);
    eprintln!("slurm test took {:.1?}", began.elapsed());
}
