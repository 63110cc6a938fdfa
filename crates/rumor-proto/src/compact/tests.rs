//! Tests of the dense forms, the byte form and error feedback for bf16 and int8.

use super::*;
use proptest::prelude::*;

/// The form's name.
pub(super) fn kind(c: &CompactValues) -> &'static str {
    match c {
        CompactValues::F32(_) => "f32",
        CompactValues::Bf16(_) => "bf16",
        CompactValues::Int8 { .. } => "int8",
        CompactValues::Sparse { .. } => "sparse",
    }
}

#[test]
fn int8_quantized_values_encode_as_int8_and_decode_bit_exact() {
    let mut q = Quantizer::new(Compression::Int8);
    let mut d: Vec<f32> = (0..1000)
        .map(|i| ((i as f32) * 0.37).sin() * 1e-3)
        .collect();
    q.quantize(&mut d);
    let c = CompactValues::encode(&d);
    assert_eq!(kind(&c), "int8");
    assert_eq!(c.data_bytes(), 1000 + 4);
    let back = c.decode().unwrap();
    assert!(back.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits()));
    // Re-encoding what was decoded gives the same bytes.
    assert_eq!(CompactValues::encode(&back), c);
}

#[test]
fn bf16_quantized_values_encode_as_bf16() {
    let mut q = Quantizer::new(Compression::Bf16);
    let mut d: Vec<f32> = (0..300).map(|i| (i as f32).cos() * 1e6 + 0.5).collect();
    q.quantize(&mut d);
    let c = CompactValues::encode(&d);
    assert_eq!(kind(&c), "bf16");
    let back = c.decode().unwrap();
    assert!(back.iter().zip(&d).all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn unquantized_values_and_nan_stay_f32_exactly() {
    let d = vec![0.1f32, -3.3, f32::NAN, 7e-20];
    let mut q = Quantizer::new(Compression::Int8);
    let mut quantized = d.clone();
    q.quantize(&mut quantized);
    // The block holds NaN: left as it is, so the receiver sees the NaN and refuses it.
    assert!(quantized[2].is_nan());
    assert_eq!(q.residual()[2], 0.0);
    let c = CompactValues::encode(&d);
    assert_eq!(kind(&c), "f32");
    let back = c.decode().unwrap();
    assert_eq!(back[0], 0.1);
    assert!(back[2].is_nan());
}

#[test]
fn byte_form_round_trips_and_checks_the_count() {
    let mut q = Quantizer::new(Compression::Int8);
    let mut d: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) * 1e-4).collect();
    q.quantize(&mut d);
    for values in [d.clone(), vec![0.1, 0.2, 0.3]] {
        let bytes = CompactValues::encode(&values).to_bytes();
        let back = CompactValues::decode_bytes(&bytes, values.len()).unwrap();
        assert_eq!(back, values);
        assert!(CompactValues::decode_bytes(&bytes, values.len() + 1).is_err());
    }
    assert!(CompactValues::decode_bytes(&[], 0).is_err());
    assert!(CompactValues::decode_bytes(&[9, 0, 0, 0, 0], 1).is_err());
}

#[test]
fn negative_zero_is_kept() {
    let c = CompactValues::encode(&[-0.0, 1.0]);
    let back = c.decode().unwrap();
    assert_eq!(back[0].to_bits(), (-0.0f32).to_bits());
}

#[test]
fn malformed_compact_values_are_errors() {
    assert!(CompactValues::F32(vec![0; 5]).decode().is_err());
    assert!(CompactValues::Bf16(vec![0; 3]).decode().is_err());
    let blocks = CompactValues::Int8 {
        exponents: vec![0, 0],
        values: vec![1; 10],
    };
    assert!(matches!(blocks.decode(), Err(CompactError::Blocks { .. })));
    let range = CompactValues::Int8 {
        exponents: vec![127],
        values: vec![1; 10],
    };
    assert!(matches!(range.decode(), Err(CompactError::Range(_))));
    let k = CompactValues::Int8 {
        exponents: vec![0],
        values: vec![0x80],
    };
    assert!(matches!(k.decode(), Err(CompactError::Range(_))));
}

#[test]
fn error_feedback_keeps_the_running_sum_within_one_quantum() {
    let mut q = Quantizer::new(Compression::Int8);
    let mut exact_sum = vec![0.0f64; 512];
    let mut sent_sum = vec![0.0f64; 512];
    for round in 0..50 {
        let d: Vec<f32> = (0..512)
            .map(|i| (((i * 7 + round * 13) % 101) as f32 - 50.0) * 1e-5)
            .collect();
        let mut sent = d.clone();
        q.quantize(&mut sent);
        for i in 0..512 {
            exact_sum[i] += f64::from(d[i]);
            sent_sum[i] += f64::from(sent[i]);
        }
    }
    for i in 0..512 {
        // What is still owed is exactly the residual (up to f32 rounding of the sums).
        let owed = exact_sum[i] - sent_sum[i];
        assert!(
            (owed - f64::from(q.residual()[i])).abs() < 1e-6,
            "value {i}"
        );
        assert!(q.residual()[i].abs() <= 5e-4 / 127.0 * 2.0, "value {i}");
    }
}

proptest! {
    #[test]
    fn any_vector_round_trips_bit_exact(values in proptest::collection::vec(any::<f32>(), 0..700)) {
        let c = CompactValues::encode(&values);
        let back = c.decode().unwrap();
        prop_assert_eq!(back.len(), values.len());
        for (a, b) in back.iter().zip(&values) {
            prop_assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn quantized_vectors_encode_compactly(values in proptest::collection::vec(-1e3f32..1e3, 1..700), bf16 in any::<bool>()) {
        let scheme = if bf16 { Compression::Bf16 } else { Compression::Int8 };
        let mut q = Quantizer::new(scheme);
        let mut d = values.clone();
        q.quantize(&mut d);
        let c = CompactValues::encode(&d);
        let limit = if bf16 { 2 * d.len() } else { d.len() + d.len().div_ceil(BLOCK) };
        prop_assert!(c.data_bytes() <= limit, "{} bytes for {} values", c.data_bytes(), d.len());
        let back = c.decode().unwrap();
        for (a, b) in back.iter().zip(&d) {
            prop_assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
