//! The lab's analysis of hand-made `metrics.jsonl` lines.
//!
//! Compiled only under `#[cfg(test)]` (the parent declares `#[cfg(test)] mod tests;`): every
//! `unwrap`/`expect` here runs on data the test itself built, and a failure fails the test.

use std::path::Path;

use super::*;

fn line(peer: &str, t: f64, acc: Option<f32>) -> String {
    serde_json::json!({
        "time": 1000.0 + t, "elapsed_seconds": t, "peer": peer, "step": 1, "samples": 64,
        "test_accuracy": acc, "bytes_sent": 10, "bytes_received": 10
    })
    .to_string()
}

#[test]
fn time_to_target_uses_every_peers_latest_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    for (peer, lines) in [
        (
            "peer-0",
            vec![
                line("peer-0", 1.0, Some(0.5)),
                line("peer-0", 3.0, Some(0.9)),
            ],
        ),
        (
            "peer-1",
            vec![
                line("peer-1", 2.0, Some(0.7)),
                line("peer-1", 5.0, Some(0.85)),
            ],
        ),
    ] {
        std::fs::create_dir_all(dir.path().join(peer)).unwrap();
        std::fs::write(
            dir.path().join(peer).join("metrics.jsonl"),
            lines.join("\n"),
        )
        .unwrap();
    }
    let peer = |name: &str| crate::run::PeerSummary {
        peer_id: String::new(),
        name: name.into(),
        test_accuracy: 0.9,
        metrics: crate::workload::Metrics(vec![("accuracy".into(), 0.9)]),
        version: 1,
        applied: 1,
        bytes_sent: 10,
        bytes_received: 10,
        steps: 1,
        samples: 64,
        drained: true,
        drain_seconds: Some(if name == "peer-0" { 0.5 } else { 1.5 }),
        // peer-0 drains 1009.5–1010.0, peer-1 1009.0–1010.5 (the run started at 1000).
        drain_ended_unix: Some(if name == "peer-0" { 1010.0 } else { 1010.5 }),
        parameters: 1000,
    };
    let summary = RunSummary {
        mode: "gossip".into(),
        dataset: "synthetic".into(),
        peers: vec![peer("peer-0"), peer("peer-1")],
        mean_test_accuracy: 0.9,
        min_test_accuracy: 0.9,
        metrics: crate::workload::Metrics(vec![("accuracy".into(), 0.9)]),
        consensus_distance: 0.0,
        wall_seconds: 6.0,
        samples_total: 128,
        lr: 0.001,
        epochs: 1,
        parameters: 1000,
    };
    let lab: LabFile = toml::from_str("name = \"t\"\ntarget_accuracy = 0.75\n").unwrap();
    let cell = lab.cells()[0].clone();
    let (rows, s, series) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
    assert_eq!(rows.len(), 4);
    // Mean: t=2 → 0.6, t=3 → 0.8 (reached), t=5 → 0.875; every peer ≥ 0.75 only at t=5.
    assert_eq!(s.time_to_target_seconds, Some(3.0));
    assert_eq!(s.time_to_target_all_seconds, Some(5.0));
    assert_eq!(series.mean_value.len(), 3);
    assert!((s.final_mean - 0.9).abs() < 1e-12 && (s.final_worst - 0.9).abs() < 1e-12);
    // The longest drain of the run, and how many of the cell's 4 peers drained (2 ran).
    assert_eq!(s.drain_seconds, Some(1.5));
    assert_eq!(s.peers_drained, 2);
    // The cluster's drain runs from the last drain start (1009.5) to the last end (1010.5);
    // training from the start (1000) to that last drain start.
    assert_eq!(s.cluster_drain_seconds, Some(1.0));
    assert_eq!(s.training_seconds, Some(9.5));
    let text = report(&LabSummary {
        name: "t".into(),
        target: lab.target().unwrap(),
        time_to_target_definition: String::new(),
        cells: vec![s],
        failed: vec![FailedRun {
            cell: "gossip-x".into(),
            error: "it broke".into(),
        }],
        plots: vec![],
    });
    assert!(
        text.contains("## Failed runs\n\n- `gossip-x`: it broke"),
        "{text}"
    );
    assert!(text.contains("| gossip |"), "{text}");
    assert!(text.contains("| 2/4 | 1.5 |"), "{text}");
    assert!(text.contains("| 1.0 (11%) |"), "{text}");
    assert!(text.contains("Target: accuracy ≥ 0.75"), "{text}");
}

/// A loss target is reached from above, read from the `metrics` of each line; the worst
/// peer is the one with the highest loss.
#[test]
fn a_loss_target_is_reached_from_above() {
    let dir = tempfile::tempdir().unwrap();
    let loss_line = |peer: &str, t: f64, loss: f64| {
        serde_json::json!({
            "time": 1000.0 + t, "elapsed_seconds": t, "peer": peer, "step": 1,
            "samples": 64, "test_accuracy": null,
            "metrics": {"val_loss": loss, "perplexity": loss.exp()},
            "bytes_sent": 10, "bytes_received": 10
        })
        .to_string()
    };
    for (peer, lines) in [
        (
            "peer-0",
            [loss_line("peer-0", 1.0, 3.0), loss_line("peer-0", 3.0, 1.5)],
        ),
        (
            "peer-1",
            [loss_line("peer-1", 2.0, 2.5), loss_line("peer-1", 5.0, 1.9)],
        ),
    ] {
        std::fs::create_dir_all(dir.path().join(peer)).unwrap();
        std::fs::write(
            dir.path().join(peer).join("metrics.jsonl"),
            lines.join("\n"),
        )
        .unwrap();
    }
    let metrics = |v: f64| crate::workload::Metrics(vec![("val_loss".into(), v)]);
    let peer = |name: &str, v: f64| crate::run::PeerSummary {
        peer_id: String::new(),
        name: name.into(),
        test_accuracy: 0.0,
        metrics: metrics(v),
        version: 1,
        applied: 1,
        bytes_sent: 10,
        bytes_received: 10,
        steps: 1,
        samples: 64,
        drained: true,
        drain_seconds: None,
        drain_ended_unix: None,
        parameters: 1000,
    };
    let summary = RunSummary {
        mode: "gossip".into(),
        dataset: "austen".into(),
        peers: vec![peer("peer-0", 1.5), peer("peer-1", 1.9)],
        mean_test_accuracy: 0.0,
        min_test_accuracy: 0.0,
        metrics: metrics(1.7),
        consensus_distance: 0.0,
        wall_seconds: 6.0,
        samples_total: 128,
        lr: 0.001,
        epochs: 1,
        parameters: 1000,
    };
    let lab: LabFile =
        toml::from_str("name = \"t\"\n[target]\nmetric = \"val_loss\"\nvalue = 2.0\n").unwrap();
    let cell = lab.cells()[0].clone();
    let (rows, s, _) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
    assert_eq!(rows[0].metric, "val_loss");
    // Mean: t=2 → 2.75, t=3 → 2.0 (reached); every peer ≤ 2.0 only at t=5.
    assert_eq!(s.time_to_target_seconds, Some(3.0));
    assert_eq!(s.time_to_target_all_seconds, Some(5.0));
    assert!((s.final_worst - 1.9).abs() < 1e-12, "{}", s.final_worst);
}

#[test]
fn a_target_needs_one_form_and_a_direction() {
    let parse = |text: &str| toml::from_str::<LabFile>(text).unwrap().target();
    assert!(parse("name = \"t\"\n").is_err());
    assert!(parse("name = \"t\"\ntarget_accuracy = 1.5\n").is_err());
    let both =
        "name = \"t\"\ntarget_accuracy = 0.5\n[target]\nmetric = \"val_loss\"\nvalue = 2.0\n";
    assert!(parse(both).is_err());
    let unknown = "name = \"t\"\n[target]\nmetric = \"bleu\"\nvalue = 30.0\n";
    assert!(parse(unknown).unwrap_err().contains("direction"));
    let given = "name = \"t\"\n[target]\nmetric = \"bleu\"\nvalue = 30.0\ndirection = \"higher\"\n";
    assert_eq!(
        parse(given).unwrap().direction,
        crate::workload::Direction::Higher
    );
}

/// Writes each peer's `lines` as `dir/PEER/metrics.jsonl`.
fn write_metrics(dir: &Path, peers: &[(&str, Vec<serde_json::Value>)]) {
    for (peer, lines) in peers {
        std::fs::create_dir_all(dir.join(peer)).unwrap();
        let text: Vec<String> = lines.iter().map(ToString::to_string).collect();
        std::fs::write(dir.join(peer).join("metrics.jsonl"), text.join("\n")).unwrap();
    }
}

/// A metrics line of `peer` at `t` s: its steps, UDP bytes sent and accuracy (if evaluated).
fn counted_line(peer: &str, t: f64, step: u64, bytes: u64, acc: Option<f32>) -> serde_json::Value {
    serde_json::json!({
        "time": 1000.0 + t, "elapsed_seconds": t, "peer": peer, "step": step,
        "samples": step * 64, "test_accuracy": acc, "bytes_sent": bytes, "bytes_received": bytes
    })
}

/// The summary of a run in `mode` whose peers (`name`, steps, bytes sent) end at accuracy
/// 0.9, with a model of `parameters`.
fn run_summary(mode: &str, peers: &[(&str, u64, u64)], parameters: u64) -> RunSummary {
    let metrics = || crate::workload::Metrics(vec![("accuracy".into(), 0.9)]);
    let peers: Vec<crate::run::PeerSummary> = peers
        .iter()
        .map(|&(name, steps, bytes)| crate::run::PeerSummary {
            peer_id: String::new(),
            name: name.into(),
            test_accuracy: 0.9,
            metrics: metrics(),
            version: 1,
            applied: 1,
            bytes_sent: bytes,
            bytes_received: bytes,
            steps,
            samples: steps * 64,
            drained: true,
            drain_seconds: None,
            drain_ended_unix: None,
            parameters,
        })
        .collect();
    RunSummary {
        mode: mode.into(),
        dataset: "synthetic".into(),
        samples_total: peers.iter().map(|p| p.samples).sum(),
        peers,
        mean_test_accuracy: 0.9,
        min_test_accuracy: 0.9,
        metrics: metrics(),
        consensus_distance: 0.0,
        wall_seconds: 5.0,
        lr: 0.001,
        epochs: 1,
        parameters,
    }
}

/// Bytes to target are each peer's on its first line at or after the time to target; the
/// all-reduce of P = 1000 among N = 4 sends 2·3/4 · 4 · 1000 = 6000 B per step and peer.
#[test]
fn bytes_to_target_and_the_allreduce_ratios_come_from_the_metrics_lines() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["peer-0", "peer-1", "peer-2", "peer-3"];
    let peers: Vec<(&str, Vec<serde_json::Value>)> = names
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let dt = 0.1 * i as f64;
            let lines = vec![
                counted_line(name, 1.0 + dt, 50, 2_000, Some(0.5)),
                counted_line(name, 2.0 + dt, 100, 4_000, Some(0.8)),
                counted_line(name, 4.0, 200, 10_000, Some(0.9)),
            ];
            (name, lines)
        })
        .collect();
    write_metrics(dir.path(), &peers);
    let summary = run_summary("gossip", &names.map(|name| (name, 200, 10_000)), 1000);
    let lab: LabFile =
        toml::from_str("name = \"t\"\ntarget_accuracy = 0.75\nmodes = [\"gossip\"]\npeers = [4]\n")
            .unwrap();
    let cell = lab.cells()[0].clone();
    let (rows, s, _) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
    // The mean reaches 0.8 when peer-3 evaluates at 2.3 s. Then peers 0..2 have no line
    // before 4 s (200 steps, 10,000 B), peer-3 its line at 2.3 s (100 steps, 4,000 B).
    let t = s.time_to_target_seconds.unwrap();
    assert!((t - 2.3).abs() < 1e-9, "{t}");
    let c = &s.communication;
    assert_eq!(c.parameters, Some(1000));
    assert_eq!(c.steps_to_target_per_peer, Some(175.0));
    assert_eq!(c.bytes_to_target_per_peer, Some(8_500.0));
    assert_eq!(c.allreduce_bytes_to_target_per_peer, Some(6_000.0 * 175.0));
    let r = c.allreduce_ratio_to_target.unwrap();
    assert!((r - 6_000.0 * 175.0 / 8_500.0).abs() < 1e-9, "{r}");
    // The whole run: 200 steps and 10,000 B per peer: 1,200,000 B of all-reduce, 120×.
    assert_eq!(c.steps_per_peer, 200.0);
    assert_eq!(c.allreduce_bytes_per_peer, Some(1_200_000.0));
    assert_eq!(c.allreduce_ratio_total, Some(120.0));
    // Each row: what all-reduce would have sent by its step (100 steps: 600,000 B), and the
    // run's numbers.
    let at_100 = rows.iter().find(|r| r.step == 100).unwrap();
    assert_eq!(at_100.allreduce_bytes, Some(600_000.0));
    assert!(rows
        .iter()
        .all(|r| r.allreduce_ratio_total == Some(120.0)
            && r.bytes_to_target_per_peer == Some(8_500.0)));
    let json = serde_json::to_value(&s).unwrap();
    for key in [
        "bytes_to_target_per_peer",
        "allreduce_bytes_per_peer",
        "allreduce_ratio_to_target",
        "allreduce_ratio_total",
    ] {
        assert!(
            json.get(key).is_some_and(|v| v.is_number()),
            "{key}: {json}"
        );
    }
    let text = report(&LabSummary {
        name: "t".into(),
        target: lab.target().unwrap(),
        time_to_target_definition: String::new(),
        cells: vec![s],
        failed: vec![],
        plots: vec![],
    });
    assert!(text.contains("| MiB to target/peer | × less than all-reduce to target | × less than all-reduce total |"), "{text}");
    // 8,500 B = 0.01 MiB; 123.5× to target, 120.0× over the run.
    assert!(text.contains("| 0.01 | 123.5 | 120.0 |"), "{text}");
}

/// The centralized baseline writes one "peer"'s lines with no bytes: its time to target is
/// measured as the other modes' are, and it has no ratio to all-reduce (N = 1 sends nothing).
/// A target it does not reach leaves the "to target" numbers empty.
#[test]
fn a_centralized_cell_is_timed_from_its_lines_and_has_no_allreduce_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let name = crate::run::CENTRALIZED_PEER;
    write_metrics(
        dir.path(),
        &[(
            name,
            vec![
                counted_line(name, 1.0, 50, 0, Some(0.5)),
                counted_line(name, 3.0, 100, 0, Some(0.8)),
                counted_line(name, 4.0, 150, 0, Some(0.85)),
            ],
        )],
    );
    let summary = run_summary("centralized", &[(name, 150, 0)], 1000);
    for (target, reached) in [(0.75, true), (0.95, false)] {
        let lab: LabFile = toml::from_str(&format!(
            "name = \"t\"\ntarget_accuracy = {target}\nmodes = [\"centralized\"]\npeers = [4]\n"
        ))
        .unwrap();
        let cell = lab.cells()[0].clone();
        let (rows, s, series) = analyse(&lab, &cell, dir.path(), &summary).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(series.mean_value.len(), 3);
        assert_eq!(
            s.peers_drained, 4,
            "one process stands for the cell's peers"
        );
        let c = &s.communication;
        assert_eq!(c.allreduce_bytes_per_peer, Some(0.0));
        assert_eq!(c.allreduce_ratio_total, None);
        assert_eq!(c.allreduce_ratio_to_target, None);
        assert!(rows.iter().all(|r| r.allreduce_bytes == Some(0.0)));
        if reached {
            assert_eq!(s.time_to_target_seconds, Some(3.0));
            assert_eq!(s.time_to_target_all_seconds, Some(3.0));
            assert_eq!(c.bytes_to_target_per_peer, Some(0.0));
            assert_eq!(c.steps_to_target_per_peer, Some(100.0));
        } else {
            assert_eq!(s.time_to_target_seconds, None);
            assert_eq!(c.bytes_to_target_per_peer, None);
            assert_eq!(c.steps_to_target_per_peer, None);
            assert_eq!(c.allreduce_bytes_to_target_per_peer, None);
        }
        let text = report(&LabSummary {
            name: "t".into(),
            target: lab.target().unwrap(),
            time_to_target_definition: String::new(),
            cells: vec![s],
            failed: vec![],
            plots: vec![],
        });
        let to_target = if reached { "0.00" } else { "-" };
        assert!(
            text.contains(&format!("| {to_target} | - | - | - |\n")),
            "{text}"
        );
    }
}
