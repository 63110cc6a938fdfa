//! Tests of loading and validating configurations.

use super::*;

#[test]
fn shipped_default_toml_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let parsed = Config::from_file(&path).unwrap();
    assert_eq!(parsed, Config::default());
    parsed.validate().unwrap();
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
    c.train.shard = "5/4".into();
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("train.shard"), "{err}");
    let err = Config::from_toml("[peer]\njoin_timeout = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("join_timeout"), "{err}");
}
