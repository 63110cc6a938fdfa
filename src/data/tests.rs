//! Tests for dataset specs and loading.
//!
//! Compiled only under `#[cfg(test)]` (the parent declares `#[cfg(test)] mod tests;`): every
//! `unwrap`/`expect` here runs on data the test itself built, and a failure fails the test.

use super::*;

#[test]
fn dataset_spec_parses_and_round_trips() {
    let cases = [
        ("auto", DatasetSpec::Auto),
        ("synthetic", DatasetSpec::Synthetic),
        ("fashion-mnist", DatasetSpec::FashionMnist),
        (
            "idx:/tmp/mnist",
            DatasetSpec::Idx(PathBuf::from("/tmp/mnist")),
        ),
        ("idx:rel/dir", DatasetSpec::Idx(PathBuf::from("rel/dir"))),
    ];
    for (text, spec) in cases {
        let parsed: DatasetSpec = text.parse().expect("valid spec");
        assert_eq!(parsed, spec);
        assert_eq!(spec.to_string(), text);
        assert_eq!(spec.to_string().parse::<DatasetSpec>().ok(), Some(spec));
    }
}

#[test]
fn dataset_spec_rejects_bad_values_with_clear_error() {
    for bad in ["", "mnist", "Auto", "idx:", "idx", "fashion_mnist", " auto"] {
        let err = bad.parse::<DatasetSpec>().expect_err(bad);
        let msg = err.to_string();
        assert!(matches!(err, DataError::BadDatasetSpec { .. }), "{msg}");
        assert!(msg.contains(&format!("`{bad}`")), "{msg}");
        for form in ["auto", "synthetic", "fashion-mnist", "idx:DIR"] {
            assert!(msg.contains(form), "{msg}");
        }
    }
}

#[test]
fn subset_and_gather_batch_keep_order() {
    let ds = Dataset::new(
        vec![0.0, 0.1, 1.0, 1.1, 2.0, 2.1],
        vec![0, 1, 2],
        2,
        NUM_CLASSES,
    )
    .expect("consistent shapes");
    assert_eq!(ds.len(), 3);
    assert!(!ds.is_empty());
    let sub = ds.subset(&[2, 0, 2]);
    assert_eq!(sub.images, vec![2.0, 2.1, 0.0, 0.1, 2.0, 2.1]);
    assert_eq!(sub.labels, vec![2, 0, 2]);
    assert_eq!((sub.dim, sub.classes), (2, NUM_CLASSES));

    let mut images = vec![9.0; 7];
    let mut labels = vec![9; 5];
    ds.gather_batch(&[1], &mut images, &mut labels);
    assert_eq!(images, vec![1.0, 1.1]);
    assert_eq!(labels, vec![1]);
    ds.gather_batch(&[], &mut images, &mut labels);
    assert!(images.is_empty() && labels.is_empty());
    assert!(ds.subset(&[]).is_empty());
}

#[test]
fn dataset_new_validates_shapes_and_labels() {
    assert!(matches!(
        Dataset::new(vec![0.0; 5], vec![0, 1], 3, 10),
        Err(DataError::BadShape { .. })
    ));
    assert!(matches!(
        Dataset::new(vec![0.0; 4], vec![0, 10], 2, 10),
        Err(DataError::LabelOutOfRange {
            row: 1,
            label: 10,
            ..
        })
    ));
}

#[test]
fn synthetic_spec_loads_synthetic() -> Result<(), DataError> {
    let tt = load(&DatasetSpec::Synthetic, 3)?;
    assert_eq!(tt.name, "synthetic");
    assert_eq!(tt.train.len(), SYNTHETIC_TRAIN_LEN);
    assert_eq!(tt.test.len(), SYNTHETIC_TEST_LEN);
    assert_eq!(tt.train.dim, IMAGE_DIM);
    assert!(tt.description.contains("synthetic"), "{}", tt.description);
    Ok(())
}

#[test]
fn auto_falls_back_to_synthetic_and_says_why() -> Result<(), Box<dyn std::error::Error>> {
    let empty = tempfile::tempdir()?;
    let tt = load_auto(empty.path(), 7)?;
    println!("{}", tt.description);
    assert_eq!(tt.name, "synthetic");
    assert!(tt.description.contains("auto"), "{}", tt.description);
    assert!(
        tt.description
            .contains("apt-get install dataset-fashion-mnist"),
        "{}",
        tt.description
    );
    assert!(
        tt.description.contains(&empty.path().display().to_string()),
        "{}",
        tt.description
    );
    Ok(())
}

#[test]
fn idx_spec_with_missing_dir_names_dir_and_files() {
    let spec = DatasetSpec::Idx(PathBuf::from("/nonexistent/rumor-data"));
    let err = load(&spec, 0).expect_err("missing dir");
    let msg = err.to_string();
    assert!(matches!(err, DataError::MissingFile { .. }), "{msg}");
    assert!(msg.contains("/nonexistent/rumor-data"), "{msg}");
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(msg.contains("train-images.idx3-ubyte"), "{msg}");
    assert!(!msg.contains("apt-get"), "{msg}");
}

#[test]
fn real_fashion_mnist_if_installed() -> Result<(), DataError> {
    let dir = Path::new(FASHION_MNIST_DIR);
    if idx::locate(dir, None).is_err() {
        println!("skipped: Fashion-MNIST not installed in {FASHION_MNIST_DIR}");
        return Ok(());
    }
    let tt = load(&DatasetSpec::FashionMnist, 0)?;
    println!("{}", tt.description);
    assert_eq!(tt.name, "fashion-mnist");
    assert_eq!(tt.train.len(), 60_000);
    assert_eq!(tt.test.len(), 10_000);
    assert_eq!(tt.train.dim, IMAGE_DIM);
    assert_eq!(tt.test.dim, IMAGE_DIM);
    assert_eq!(tt.train.images.len(), 60_000 * IMAGE_DIM);
    assert!(tt.train.images.iter().all(|v| (0.0..=1.0).contains(v)));
    let mut counts = [0usize; NUM_CLASSES];
    for &label in &tt.train.labels {
        counts[usize::from(label)] += 1;
    }
    assert_eq!(counts, [6_000; NUM_CLASSES]);
    let auto = load(&DatasetSpec::Auto, 0)?;
    println!("{}", auto.description);
    assert_eq!(auto.name, "fashion-mnist");
    assert!(auto.description.contains("auto"), "{}", auto.description);
    Ok(())
}
