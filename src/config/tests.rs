//! Tests of loading and validating configurations.

use super::*;

#[test]
fn shipped_default_toml_matches_the_built_in_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let parsed = Config::from_file(&path).unwrap();
    assert_eq!(parsed, Config::default());
    parsed.validate().unwrap();
}

/// Every key the built-in defaults have is written out in `config/default.toml`, so the shipped
/// file documents the whole schema (a key missing there would still parse, to its default).
#[test]
fn shipped_default_toml_names_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml");
    let shipped: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
    let built_in: toml::Table = toml::to_string(&Config::default())
        .unwrap()
        .parse()
        .unwrap();
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
