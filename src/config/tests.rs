//! Tests of loading and validating configurations.

use std::time::Duration;

use super::*;
use crate::data::{DatasetSpec, ShardSpec};
use crate::model::ModelSpec;

/// A test that fails with the error of the step that went wrong.
type TestResult = Result<(), Box<dyn std::error::Error>>;

#[test]
fn shipped_default_toml_matches_the_built_in_defaults() -> TestResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let parsed = Config::from_file(&path)?;
    assert_eq!(parsed, Config::default());
    parsed.validate()?;
    Ok(())
}

/// Every key the built-in defaults have is written out in `config/default.toml`, so the shipped
/// file documents the whole schema (a key missing there would still parse, to its default).
#[test]
fn shipped_default_toml_names_every_key() -> TestResult {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let shipped: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    let built_in: toml::Table = toml::to_string(&Config::default())?.parse()?;
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let name = format!("{prefix}{k}");
            match v {
                toml::Value::Table(t) if !t.is_empty() => keys(t, &format!("{name}."), out),
                _ => out.push(name),
            }
        }
    }
    let (mut want, mut have) = (Vec::new(), Vec::new());
    keys(&built_in, "", &mut want);
    keys(&shipped, "", &mut have);
    let missing: Vec<&String> = want.iter().filter(|k| !have.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "not in config/default.toml: {missing:?}"
    );
    Ok(())
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml("[train]\nbatch_sise = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_sise"), "{err}");
}

#[test]
fn bad_value_is_named() {
    let mut c = Config::default();
    c.train.batch_size = 0;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("train.batch_size"), "{err}");
    let mut c = Config::default();
    c.train.shard = ShardSpec { index: 4, count: 4 };
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("train.shard"), "{err}");
    let err = Config::from_toml("[peer]\njoin_timeout = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("join_timeout"), "{err}");
}

/// `train.dataset`, `train.model` and `train.shard` are read once, into their types; a bad
/// value is toml's error, which names the key's line and column and says what is wrong.
#[test]
fn spec_keys_parse_once_and_bad_ones_are_named_where_they_are() -> TestResult {
    let c = Config::from_toml(
        "[train]\ndataset = \"idx:/data/mnist\"\nmodel = \"20-8-4\"\nshard = \"2/3\"\n",
    )?;
    assert_eq!(c.train.dataset, DatasetSpec::Idx("/data/mnist".into()));
    assert_eq!(c.train.model.to_string(), "20-8-4");
    assert_eq!(c.train.shard, ShardSpec { index: 1, count: 3 });
    // Written back as the same strings.
    assert_eq!(Config::from_toml(&toml::to_string(&c)?)?, c);
    for (text, line, want) in [
        (
            "[train]\nshard = \"5/4\"\n",
            "line 2",
            "bad shard `5/4`: K must not exceed N",
        ),
        (
            "[train]\n\nmodel = \"784-0x-10\"\n",
            "line 3",
            "invalid model spec",
        ),
        (
            "[train]\ndataset = \"mnist\"\n",
            "line 2",
            "unknown dataset `mnist`",
        ),
        ("[train]\nshard = 2\n", "line 2", "invalid type"),
    ] {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(line) && err.contains(want), "{text:?}: {err}");
    }
    Ok(())
}

/// `[transport]` is the transport's own settings type: durations in units, unknown keys
/// refused, and what the transport runs with filled in from `[gossip]` and the model.
#[test]
fn transport_section_is_the_transport_config() -> TestResult {
    let c = Config::from_toml(
        "[transport]\ninitial_rtt = \"10ms\"\nsend_timeout = \"3s\"\nmax_ack_delay = \"1ms\"\n",
    )?;
    assert_eq!(c.transport.initial_rtt, Duration::from_millis(10));
    assert_eq!(c.transport.send_timeout, Duration::from_secs(3));
    assert_eq!(c.transport.max_ack_delay, Duration::from_millis(1));
    let err = Config::from_toml("[transport]\nmax_message_bytes = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_message_bytes"), "{err}");
    let err = Config::from_toml("[transport]\nstream_timeout = 15000\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("stream_timeout"), "{err}");

    let mut c = Config::default();
    c.gossip.max_message_bytes = 8 << 20;
    let params = ModelSpec::default().param_count();
    let t = c.transport_config(params);
    assert_eq!(t.max_message_bytes, 8 << 20);
    // 0 derives a connection's budget from the model: (16 + 2) in-flight messages twice over,
    // 4 bytes per parameter plus a frame header each, at least one message.
    let frame = params as u64 * 4 + 4096;
    assert_eq!(
        t.max_buffered_bytes_per_connection,
        (18 * frame * 2).max(8 << 20)
    );
    assert_eq!(
        t.buffered_bytes_budgets(),
        (
            t.max_buffered_bytes_per_connection,
            2 * t.max_buffered_bytes_per_connection
        )
    );
    c.transport.max_buffered_bytes_per_connection = 20 << 20;
    c.transport.max_buffered_bytes_per_member = 30 << 20;
    assert_eq!(
        c.transport_config(params).buffered_bytes_budgets(),
        (20 << 20, 30 << 20)
    );
    Ok(())
}

/// `[peer]`'s lifecycle keys reach the protocol as its lifecycle policy.
#[test]
fn peer_lifecycle_keys_become_the_core_lifecycle() -> TestResult {
    let c = Config::from_toml(
        "[peer]\nmin_peers = 3\njoin_timeout = \"2m\"\ndrain_timeout = \"90s\"\ncheckpoint_interval = \"5s\"\n",
    )
    ?;
    let core = c.core_config(1234);
    assert_eq!(core.lifecycle.min_peers, Some(3));
    assert_eq!(core.lifecycle.join_timeout, Some(Duration::from_secs(120)));
    assert_eq!(core.lifecycle.drain_timeout, Some(Duration::from_secs(90)));
    assert_eq!(
        core.lifecycle.checkpoint_interval,
        Some(Duration::from_secs(5))
    );
    assert_eq!(core.param_count, 1234);
    Ok(())
}

/// `train.delta_compression` takes the top-k text form, writes it back the same way, and names
/// the accepted forms when a value is wrong.
#[test]
fn delta_compression_takes_the_topk_text_form() -> TestResult {
    use crate::model::Compression;
    let c = Config::from_toml("[train]\ndelta_compression = \"topk:2%:2bit\"\n")?;
    assert_eq!(
        c.train.delta_compression,
        Compression::TopK {
            density_bp: 200,
            bits: 2
        }
    );
    let written = toml::to_string(&c)?;
    assert!(
        written.contains("delta_compression = \"topk:2%:2bit\""),
        "{written}"
    );
    assert_eq!(Config::from_toml(&written)?, c);
    let c = Config::from_toml("[train]\ndelta_compression = \"topk:1.5%:4bit\"\n")?;
    assert_eq!(c.train.delta_compression.to_string(), "topk:1.5%:4bit");
    let err = Config::from_toml("[train]\ndelta_compression = \"topk:0%\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("delta_compression `topk:0%`: density must be in (0%, 100%]")
            && err.contains("accepted: none, bf16, int8, topk"),
        "{err}"
    );
    Ok(())
}

/// `gossip.lazy_push_threshold` takes a byte count or `"off"` (every delta pushed eagerly), is
/// written back the same way, and must be below `gossip.max_message_bytes` unless off.
#[test]
fn lazy_push_threshold_is_bytes_or_off() -> TestResult {
    let c = Config::from_toml("[gossip]\nlazy_push_threshold = \"off\"\n")?;
    assert_eq!(c.gossip.lazy_push_threshold, u64::MAX);
    c.validate()?;
    assert!(toml::to_string(&c)?.contains("lazy_push_threshold = \"off\""));
    assert_eq!(Config::from_toml(&toml::to_string(&c)?)?, c);
    let c = Config::from_toml("[gossip]\nlazy_push_threshold = 0\npull_timeout = \"500ms\"\n")?;
    assert_eq!(c.gossip.lazy_push_threshold, 0);
    assert_eq!(c.gossip.pull_timeout, Duration::from_millis(500));
    c.validate()?;
    let err = Config::from_toml("[gossip]\nlazy_push_threshold = \"never\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("lazy_push_threshold"), "{err}");
    let mut c = Config::default();
    c.gossip.lazy_push_threshold = c.gossip.max_message_bytes as u64;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("gossip.lazy_push_threshold"), "{err}");
    c.gossip.lazy_push_threshold = 1024;
    c.gossip.pull_timeout = Duration::ZERO;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("gossip.pull_timeout"), "{err}");
    Ok(())
}
