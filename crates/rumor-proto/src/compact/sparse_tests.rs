//! Tests of top-k quantization and the sparse wire form.

use std::time::Instant;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::tests::kind;
use super::*;

/// `n` values of a roughly normal distribution (sum of four uniforms), times `scale`.
fn random_delta(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (0..4).map(|_| rng.gen::<f32>() - 0.5).sum::<f32>() * scale)
        .collect()
}

fn topk(density_bp: u16, bits: u8) -> Compression {
    Compression::TopK { density_bp, bits }
}

fn bit_exact(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

fn norm(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

#[test]
fn topk_keeps_the_largest_values_of_each_chunk_at_low_precision() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let d = random_delta(&mut rng, 2 * CHUNK + 100, 1e-3);
    for bits in [2u8, 4] {
        let mut q = Quantizer::new(topk(200, bits));
        let mut sent = d.clone();
        q.quantize(&mut sent);
        for (c, chunk) in sent.chunks(CHUNK).enumerate() {
            let k = (chunk.len() * 2).div_ceil(100);
            let nonzero: Vec<f32> = chunk.iter().copied().filter(|&v| v != 0.0).collect();
            assert!(nonzero.len() <= k, "chunk {c}: {} > {k}", nonzero.len());
            assert!(nonzero.len() >= k / 2, "chunk {c}: only {}", nonzero.len());
            assert!(chunk.iter().all(|v| v.to_bits() != (-0.0f32).to_bits()));
            // One scale: every value is a small multiple of the smallest magnitude's divisor.
            let mags: std::collections::BTreeSet<u32> =
                nonzero.iter().map(|v| v.abs().to_bits()).collect();
            assert!(mags.len() <= 1 << (bits - 1), "chunk {c}: {mags:?}");
        }
        // Values sent have the sign of the value they stand for.
        for (x, s) in d.iter().zip(&sent) {
            assert!(*s == 0.0 || x.signum() == s.signum());
        }
    }
}

#[test]
fn topk_vectors_encode_sparse_and_small_for_a_million_values() {
    const N: usize = 1_000_000;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let d = random_delta(&mut rng, N, 1e-3);
    let mut int8 = d.clone();
    Quantizer::new(Compression::Int8).quantize(&mut int8);
    let int8_bytes = CompactValues::encode(&int8).data_bytes();
    println!("{N} values: int8 {int8_bytes} bytes");
    for (scheme, limit) in [(topk(200, 2), 30_000), (topk(200, 4), 40_000)] {
        let mut q = Quantizer::new(scheme);
        let mut sent = d.clone();
        let t = Instant::now();
        q.quantize(&mut sent);
        let quantize = t.elapsed();
        let t = Instant::now();
        let c = CompactValues::encode(&sent);
        let encode = t.elapsed();
        let t = Instant::now();
        let back = c.decode().unwrap();
        let decode = t.elapsed();
        assert_eq!(kind(&c), "sparse", "{scheme}");
        assert!(bit_exact(&back, &sent), "{scheme}");
        let nonzero = sent.iter().filter(|&&v| v != 0.0).count();
        println!(
            "{N} values, {scheme}: {} bytes ({nonzero} sent, {:.2} bytes each); \
             quantize {quantize:.1?}, encode {encode:.1?}, decode {decode:.1?}",
            c.data_bytes(),
            c.data_bytes() as f64 / nonzero as f64
        );
        assert!(c.data_bytes() < limit, "{scheme}: {} bytes", c.data_bytes());
        assert!(c.data_bytes() * 30 < int8_bytes);
        // The byte form (sync frames) round-trips too.
        let bytes = c.to_bytes();
        assert!(bit_exact(
            &CompactValues::decode_bytes(&bytes, N).unwrap(),
            &sent
        ));
        assert!(CompactValues::decode_bytes(&bytes, N + 1).is_err());
    }
}

#[test]
fn topk_error_feedback_tracks_the_exact_sum_within_the_residual() {
    const N: usize = 3 * CHUNK - 500;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for scheme in [topk(200, 2), topk(50, 4), topk(10_000, 2)] {
        let mut q = Quantizer::new(scheme);
        let mut exact_sum = vec![0.0f64; N];
        let mut sent_sum = vec![0.0f64; N];
        for _ in 0..200 {
            let d = random_delta(&mut rng, N, 1e-3);
            let mut sent = d.clone();
            q.quantize(&mut sent);
            for i in 0..N {
                exact_sum[i] += f64::from(d[i]);
                sent_sum[i] += f64::from(sent[i]);
            }
        }
        let owed: Vec<f64> = (0..N).map(|i| exact_sum[i] - sent_sum[i]).collect();
        for (i, (&o, &r)) in owed.iter().zip(q.residual()).enumerate() {
            assert!((o - f64::from(r)).abs() < 1e-5, "{scheme}, value {i}");
        }
        // What is owed stays bounded (it does not grow with the rounds): with 200 rounds of
        // values about 1e-3 the exact sums are about 1.4e-2 per value.
        let exact_norm = exact_sum.iter().map(|x| x * x).sum::<f64>().sqrt();
        let residual_norm = norm(q.residual());
        println!("{scheme}: |Σ exact| {exact_norm:.4}, |residual| {residual_norm:.4}");
        assert!(residual_norm < exact_norm, "{scheme}");
    }
}

/// Residual norm after `rounds` publishes of random deltas, with the scale fitted by
/// `fit_rounds` least-squares steps (0: `max / 2^(bits-1)`), and the relative error of the
/// values sent in the last round (`|x - q| / |x|` over the nonzero `q`).
fn residual_after(bits: u8, fit_rounds: usize, rounds: usize) -> (f64, f64) {
    const N: usize = 64 * CHUNK;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut residual = vec![0.0f32; N];
    let mut scratch = Vec::new();
    let (mut err, mut sent) = (0.0f64, 0.0f64);
    for _ in 0..rounds {
        let d = random_delta(&mut rng, N, 1e-3);
        let mut x: Vec<f32> = d.iter().zip(&residual).map(|(a, b)| a + b).collect();
        let exact = x.clone();
        for chunk in x.chunks_mut(CHUNK) {
            topk::quantize_chunk(chunk, 200, bits, fit_rounds, &mut scratch);
        }
        (err, sent) = (0.0, 0.0);
        for ((r, &e), &q) in residual.iter_mut().zip(&exact).zip(&x) {
            *r = e - q;
            if q != 0.0 {
                err += f64::from(e - q).powi(2);
                sent += f64::from(e).powi(2);
            }
        }
    }
    (norm(&residual), (err / sent).sqrt())
}

/// The scale choice: least squares against `max / 2^(bits-1)` (prints the residual norms and
/// the error of the values sent).
#[test]
fn least_squares_scale_leaves_a_smaller_residual_than_the_max_scale() {
    for bits in [2u8, 4] {
        let by_max = residual_after(bits, 0, 10);
        let steps = [1, 2, topk::FIT_ROUNDS, 8];
        let fitted: Vec<(f64, f64)> = steps.iter().map(|&r| residual_after(bits, r, 10)).collect();
        println!(
            "{bits} bit, 2%, 10 rounds of {} values: s = max/{}: residual norm {:.5}, \
             error of values sent {:.4}",
            64 * CHUNK,
            1 << (bits - 1),
            by_max.0,
            by_max.1
        );
        for (r, (norm, err)) in steps.iter().zip(&fitted) {
            println!("  least squares, {r} steps: residual norm {norm:.5}, error of values sent {err:.4}");
        }
        assert!(fitted[2].0 <= by_max.0, "{bits} bit");
        assert!(fitted[2].1 <= by_max.1, "{bits} bit");
    }
}

#[test]
fn scales_keep_twenty_significant_bits_so_products_are_exact() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for _ in 0..10_000 {
        let s = topk::snap_scale(rng.gen::<f32>() * 10f32.powi(rng.gen_range(-30..30)));
        assert_eq!(s.to_bits() & 0xF, 0);
        for c in 1..=8u32 {
            let exact = f64::from(c) * f64::from(s);
            assert_eq!(f64::from(c as f32 * s), exact);
        }
    }
}

#[test]
fn non_finite_values_reach_the_receiver() {
    let mut d = vec![1e-3f32; 3 * CHUNK];
    d[CHUNK + 7] = f32::NAN;
    d[2 * CHUNK + 1] = f32::INFINITY;
    let mut q = Quantizer::new(Compression::TOPK_DEFAULT);
    let mut sent = d.clone();
    q.quantize(&mut sent);
    // The chunks holding NaN and ∞ are left as they are and carry no residual.
    assert!(sent[CHUNK + 7].is_nan());
    assert_eq!(sent[2 * CHUNK + 1], f32::INFINITY);
    assert_eq!(sent[CHUNK], 1e-3);
    assert!(q.residual()[CHUNK..].iter().all(|&r| r == 0.0));
    assert!(q.residual()[..CHUNK].iter().any(|&r| r != 0.0));
    let c = CompactValues::encode(&sent);
    assert_ne!(kind(&c), "sparse");
    let back = c.decode().unwrap();
    assert!(back[CHUNK + 7].is_nan());
    assert!(bit_exact(&back[..CHUNK], &sent[..CHUNK]));
}

#[test]
fn negative_zero_and_unrepresentable_vectors_fall_back_to_dense() {
    let mut v = vec![0.0f32; 1000];
    v[10] = 0.25;
    v[500] = -0.5;
    assert_eq!(kind(&CompactValues::encode(&v)), "sparse");
    v[7] = -0.0;
    let c = CompactValues::encode(&v);
    assert_ne!(kind(&c), "sparse");
    assert_eq!(c.decode().unwrap()[7].to_bits(), (-0.0f32).to_bits());
    // Magnitudes 1 and 9 need a code above 8; 1 and 1.1 share no scale.
    for other in [9.0f32, 1.1] {
        let mut v = vec![0.0f32; 1000];
        v[1] = 1.0;
        v[2] = other;
        let c = CompactValues::encode(&v);
        assert_ne!(kind(&c), "sparse", "{other}");
        assert!(bit_exact(&c.decode().unwrap(), &v));
    }
    // A vector of zeros is one header byte.
    let zeros = CompactValues::encode(&vec![0.0; 3 * CHUNK]);
    assert_eq!((kind(&zeros), zeros.data_bytes()), ("sparse", 3));
    // Empty and short vectors stay dense when that is smaller.
    assert_eq!(kind(&CompactValues::encode(&[])), "int8");
    assert_eq!(kind(&CompactValues::encode(&[1.0, 2.0, 3.0])), "int8");
}

#[test]
fn a_full_density_topk_vector_is_sparse_and_smaller_than_dense() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let mut d = random_delta(&mut rng, 10_000, 1.0);
    Quantizer::new(topk(10_000, 2)).quantize(&mut d);
    let c = CompactValues::encode(&d);
    assert_eq!(kind(&c), "sparse");
    assert!(c.data_bytes() < 10_000 + 10_000 / 256 + 1);
    assert!(bit_exact(&c.decode().unwrap(), &d));
}

/// Sparse data for `len` values, checked to decode.
fn sparse(len: u64, data: Vec<u8>) -> CompactValues {
    CompactValues::Sparse { len, data }
}

#[test]
fn hand_made_sparse_data_decodes() {
    // 5 values, one chunk: two values, 2-bit, scale 0.5, at 1 and 3: codes +2 (01), -1 (10).
    let mut data = vec![2 << 1];
    data.extend_from_slice(&0.5f32.to_le_bytes());
    data.extend_from_slice(&[1, 1, 0b10_01]);
    assert_eq!(
        sparse(5, data).decode().unwrap(),
        vec![0.0, 1.0, 0.0, -0.5, 0.0]
    );
}

#[test]
fn malformed_sparse_data_is_an_error() {
    let good = |wide: bool, positions: &[u8], codes: &[u8]| {
        let mut data = vec![((positions.len() as u8) << 1) | u8::from(wide)];
        data.extend_from_slice(&0.5f32.to_le_bytes());
        data.extend_from_slice(positions);
        data.extend_from_slice(codes);
        data
    };
    assert!(sparse(5, good(false, &[1, 1], &[0b1001])).decode().is_ok());
    let mut cases: Vec<(&str, u64, Vec<u8>)> = vec![
        ("truncated codes", 5, good(false, &[1, 1], &[])),
        ("truncated scale", 5, vec![2 << 1, 0, 0]),
        ("no header", 5, vec![]),
        ("headers of 2 chunks", CHUNK as u64 + 1, vec![0]),
        (
            "trailing byte",
            5,
            [good(false, &[1, 1], &[0b1001]), vec![0]].concat(),
        ),
        (
            "position past the chunk",
            5,
            good(false, &[1, 3], &[0b1001]),
        ),
        (
            "first position past the chunk",
            5,
            good(false, &[5], &[0b01]),
        ),
        ("count above the chunk", 2, good(false, &[0, 0, 0], &[0])),
        ("padding bits", 5, good(false, &[1, 1], &[0b0001_1001])),
        ("empty but wide", 5, vec![1]),
        (
            "long-form number",
            5,
            good(false, &[0x81, 0x00, 1], &[0b01_1001]),
        ),
        ("number above 2^21", 5, vec![0x80, 0x80, 0x80, 0x01]),
    ];
    for (name, s) in [
        ("zero scale", 0.0f32),
        ("negative scale", -0.5),
        ("NaN scale", f32::NAN),
        ("infinite scale", f32::INFINITY),
    ] {
        let mut data = good(false, &[1, 1], &[0b1001]);
        data[1..5].copy_from_slice(&s.to_le_bytes());
        cases.push((name, 5, data));
    }
    for (name, len, data) in cases {
        let e = sparse(len, data).decode();
        assert!(matches!(e, Err(CompactError::Sparse(_))), "{name}: {e:?}");
        println!("{name}: {}", e.unwrap_err());
    }
    // A declared length above the limit is refused before anything is allocated.
    let huge = sparse(u64::MAX, vec![0; 10]).decode();
    assert!(
        matches!(huge, Err(CompactError::TooLong { .. })),
        "{huge:?}"
    );
    let limited = with_value_limit(1000, || sparse(1001, vec![0]).decode());
    assert_eq!(
        limited,
        Err(CompactError::TooLong {
            len: 1001,
            limit: 1000
        })
    );
    assert!(with_value_limit(1000, || sparse(1000, vec![0]).decode()).is_ok());
    // The limit is put back afterwards.
    assert!(sparse(1001, vec![0]).decode().is_ok());
    // Bad byte forms.
    assert!(CompactValues::decode_bytes(&[3, 1, 0, 0], 1).is_err());
    assert!(CompactValues::decode_bytes(&[3, 2, 0, 0, 0, 0, 0, 0, 0, 0], 1).is_err());
    assert!(CompactValues::decode_bytes(&[3, 1, 0, 0, 0, 0, 0, 0, 0, 0], 1).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Top-k quantized vectors of any length, density and width decode bit for bit, re-encode
    /// to the same bytes, and go out sparse whenever that is smaller than int8.
    #[test]
    fn topk_quantized_vectors_round_trip_bit_exact(
        values in proptest::collection::vec(-1e3f32..1e3, 0..3 * CHUNK),
        density_bp in 1u16..=10_000,
        four in any::<bool>(),
        rounds in 1usize..4,
    ) {
        let mut q = Quantizer::new(topk(density_bp, if four { 4 } else { 2 }));
        for _ in 0..rounds {
            let mut d = values.clone();
            q.quantize(&mut d);
            let c = CompactValues::encode(&d);
            let back = c.decode().unwrap();
            prop_assert!(bit_exact(&back, &d));
            prop_assert_eq!(&CompactValues::encode(&back), &c);
            if d.len() > 100 && density_bp <= 5_000 {
                prop_assert_eq!(kind(&c), "sparse");
            }
        }
    }

    /// Random bytes under any declared length give values or an error, never a panic; what
    /// decodes re-encodes to a form that decodes to the same bits.
    #[test]
    fn random_sparse_bytes_never_panic(
        len in 0u64..3 * CHUNK as u64,
        data in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Ok(values) = sparse(len, data).decode() {
            prop_assert_eq!(values.len() as u64, len);
            let again = CompactValues::encode(&values).decode().unwrap();
            prop_assert!(bit_exact(&again, &values));
        }
    }

    /// Valid sparse data with bytes flipped, cut or added: an error or values, never a panic.
    #[test]
    fn mutated_sparse_bytes_never_panic(
        values in proptest::collection::vec(-1.0f32..1.0, 1..2 * CHUNK),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut d = values;
        Quantizer::new(Compression::TOPK_DEFAULT).quantize(&mut d);
        let CompactValues::Sparse { len, mut data } = CompactValues::encode(&d) else {
            return Ok(());
        };
        for (at, b) in flips {
            if !data.is_empty() {
                let i = at.index(data.len());
                data[i] ^= b;
            }
        }
        let _ = sparse(len, data.clone()).decode();
        data.truncate(cut.index(data.len() + 1));
        let _ = sparse(len, data).decode();
    }
}
