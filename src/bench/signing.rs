//! `rumor bench signing`: what signed updates cost one peer's CPU. A fresh cluster CA and two
//! member certificates are issued in a temp dir; one member signs, the other verifies, with
//! the implementations the peers use ([`crate::net::signing`]). Each operation is timed in
//! batches of at least [`MIN_BATCH`]; the figure is the median batch's time per operation, and
//! the CPU share is that time times a message rate (the share of one core the operation takes
//! at that rate).

use std::fmt;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumor_proto::auth::{content_hash, statement, AuthError, Signer, Verifier};
use rumor_proto::wire::{Lifecycle, MemberRecord, MemberStatus};
use rumor_proto::PeerId;
use serde::Serialize;

use crate::certs::{self, CertError};
use crate::net::{CertSigner, ClusterVerifier, NetError};

/// Shortest batch: long enough that timer resolution and one scheduling hiccup do not matter.
pub const MIN_BATCH: Duration = Duration::from_millis(100);

/// What `rumor bench signing` measures with.
#[derive(Clone, Copy, Debug)]
pub struct SigningBenchOptions {
    /// Parameters of the delta (f32 values); the default MLP 784-128-10 has 101,770.
    pub params: usize,
    /// Deltas per second at which the CPU share of the delta operations is given.
    pub deltas_per_second: f64,
    /// Member records per second at which the CPU share of the record operations is given.
    pub records_per_second: f64,
    /// Batches per operation (the median is taken); at least 1.
    pub batches: usize,
}

impl Default for SigningBenchOptions {
    fn default() -> Self {
        Self {
            params: 101_770,
            deltas_per_second: 10.0,
            records_per_second: 50.0,
            batches: 7,
        }
    }
}

/// One measured operation.
#[derive(Clone, Debug, Serialize)]
pub struct SigningRow {
    /// What was timed.
    pub operation: String,
    /// Median time per operation (µs).
    pub micros: f64,
    /// Fastest and slowest batch, per operation (µs).
    pub micros_min: f64,
    /// See `micros_min`.
    pub micros_max: f64,
    /// Operations per batch.
    pub iterations: u64,
    /// The rate the CPU share is given at (per second); `None` for a breakdown row.
    pub rate_per_second: Option<f64>,
    /// `rate_per_second × micros`, as a fraction of one core (0.01 = 1 %).
    pub cpu_share: Option<f64>,
}

/// What `rumor bench signing` prints.
#[derive(Clone, Debug, Serialize)]
pub struct SigningBench {
    /// The signature scheme of the member certificates (rcgen's default key: ECDSA P-256).
    pub scheme: String,
    /// Parameters of the delta.
    pub params: usize,
    /// Bytes of a wire signature (scheme prefix included; ECDSA's DER length varies by a few).
    pub signature_bytes: usize,
    /// Bytes of a credential (the member certificate, DER).
    pub credential_bytes: usize,
    /// Batches per operation.
    pub batches: usize,
    /// The operations.
    pub rows: Vec<SigningRow>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum SigningBenchError {
    /// The temp dir could not be made.
    #[error("creating a temp dir failed")]
    TempDir(#[source] std::io::Error),
    /// The CA or a member certificate could not be issued or loaded.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// The signer or verifier could not be built.
    #[error(transparent)]
    Net(#[from] NetError),
    /// A signature did not verify or a credential was refused: the implementation is broken.
    #[error("benchmark self-check failed")]
    Auth(#[from] AuthError),
}

/// Times `op` in `batches` batches of at least [`MIN_BATCH`]; per operation, in µs: (median,
/// fastest batch, slowest batch) and the iterations per batch. The first error `op` returns
/// stops the run.
fn time<T>(
    batches: usize,
    mut op: impl FnMut() -> Result<T, AuthError>,
) -> Result<(f64, f64, f64, u64), AuthError> {
    // Warm up and size a batch: double until one takes MIN_BATCH.
    let mut iterations: u64 = 1;
    loop {
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(op()?);
        }
        if started.elapsed() >= MIN_BATCH || iterations >= 1 << 30 {
            break;
        }
        iterations *= 2;
    }
    let mut per_op = Vec::with_capacity(batches.max(1));
    for _ in 0..batches.max(1) {
        let started = Instant::now();
        for _ in 0..iterations {
            black_box(op()?);
        }
        per_op.push(started.elapsed().as_secs_f64() * 1e6 / iterations as f64);
    }
    per_op.sort_by(f64::total_cmp);
    let median = per_op[per_op.len() / 2];
    let min = per_op.first().copied().unwrap_or(median);
    let max = per_op.last().copied().unwrap_or(median);
    Ok((median, min, max, iterations))
}

/// Deterministic delta values of about the size a trained MLP's deltas have.
fn delta_values(params: usize) -> Vec<f32> {
    (0..params)
        .map(|i| ((i as f32) * 0.618_034).sin() * 1e-3)
        .collect()
}

/// Runs the benchmark; see the module documentation.
///
/// # Errors
/// [`SigningBenchError`]: the temp dir, the certificates, the signer or verifier cannot be
/// made, or a signature made here does not verify.
pub fn signing(options: &SigningBenchOptions) -> Result<SigningBench, SigningBenchError> {
    let temp = tempfile::Builder::new()
        .prefix("rumor-bench-signing-")
        .tempdir()
        .map_err(SigningBenchError::TempDir)?;
    let dir = temp.path();
    certs::init_ca(dir, false)?;
    certs::issue(dir, "bench-signer", 2)?;
    certs::issue(dir, "bench-verifier", 2)?;
    let signer = CertSigner::new(&certs::load_identity(dir, "bench-signer")?)?;
    let verifying = certs::load_identity(dir, "bench-verifier")?;
    let verifier = ClusterVerifier::new(&verifying)?;
    let uncached = ClusterVerifier::new(&verifying)?.with_cache_limits(Duration::ZERO, 0);
    let credential = signer.credential().clone();
    let origin = PeerId::bound(&credential.key_id(), [0x5e; 8]);

    let values = delta_values(options.params);
    let sign_delta = || -> Result<_, AuthError> {
        let hash = content_hash(black_box(&values));
        signer.sign(&statement::delta(origin, 17, 0.25, &hash))
    };
    let delta_signature = sign_delta()?;
    let verify_delta = || {
        let hash = content_hash(black_box(&values));
        verifier.verify(
            &credential,
            &statement::delta(origin, 17, 0.25, &hash),
            &delta_signature,
        )
    };
    verify_delta()?;

    let record = MemberRecord {
        peer_id: origin,
        name: "bench-signer".to_string(),
        addr: SocketAddr::from(([10, 1, 2, 3], 7400)),
        incarnation: 3,
        heartbeat: 12_345,
        status: MemberStatus::Alive,
        lifecycle: Lifecycle::Training,
        published: 678,
        credential: credential.clone(),
        signature: rumor_proto::auth::Signature::default(),
    };
    let sign_record = || signer.sign(&black_box(&record).statement());
    let record_signature = sign_record()?;
    let verify_record = || {
        verifier.verify(
            &credential,
            &black_box(&record).statement(),
            &record_signature,
        )
    };
    verify_record()?;
    verifier.admit(&credential)?;

    let batches = options.batches.max(1);
    let mut rows = Vec::new();
    let mut row = |operation: &str, rate: Option<f64>, timed: (f64, f64, f64, u64)| {
        let (micros, micros_min, micros_max, iterations) = timed;
        rows.push(SigningRow {
            operation: operation.to_string(),
            micros,
            micros_min,
            micros_max,
            iterations,
            rate_per_second: rate,
            cpu_share: rate.map(|r| r * micros * 1e-6),
        });
    };
    let deltas = Some(options.deltas_per_second);
    let records = Some(options.records_per_second);
    row(
        "content hash of the delta",
        None,
        time(batches, || Ok(content_hash(black_box(&values))))?,
    );
    row("hash + sign delta", deltas, time(batches, sign_delta)?);
    row("hash + verify delta", deltas, time(batches, verify_delta)?);
    row("sign member record", records, time(batches, sign_record)?);
    row(
        "verify member record",
        records,
        time(batches, verify_record)?,
    );
    row(
        "admit credential, uncached",
        records,
        time(batches, || uncached.admit(black_box(&credential)))?,
    );
    row(
        "admit credential, cached",
        records,
        time(batches, || verifier.admit(black_box(&credential)))?,
    );

    Ok(SigningBench {
        scheme: format!("{:?}", signer.scheme()),
        params: options.params,
        signature_bytes: delta_signature.0.len(),
        credential_bytes: credential.as_bytes().len(),
        batches,
        rows,
    })
}

impl fmt::Display for SigningBench {
    /// A small table: µs per operation, the rate, and the share of one core at that rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "signed updates: {}, delta of {} parameters, signature {} B, credential {} B; \
             median of {} batches",
            self.scheme, self.params, self.signature_bytes, self.credential_bytes, self.batches
        )?;
        writeln!(
            f,
            "{:<30} {:>10} {:>19} {:>9} {:>10}",
            "operation", "µs/op", "(min..max)", "rate/s", "CPU share"
        )?;
        for row in &self.rows {
            let spread = format!("({:.1}..{:.1})", row.micros_min, row.micros_max);
            let (rate, share) = match (row.rate_per_second, row.cpu_share) {
                (Some(rate), Some(share)) => (format!("{rate}"), format!("{:.3} %", share * 100.0)),
                _ => ("-".to_string(), "-".to_string()),
            };
            writeln!(
                f,
                "{:<30} {:>10.1} {:>19} {:>9} {:>10}",
                row.operation, row.micros, spread, rate, share
            )?;
        }
        write!(
            f,
            "CPU share = rate × µs/op, of one core. An uncached admission happens once per \
             member per {} s (its share at the record rate is the worst case, every record a \
             cache miss).",
            crate::net::signing::ADMIT_CACHE_TTL.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the whole benchmark small (about two seconds): every row is there, its figures are
    /// finite, and the share is rate × time. Checks no speed.
    #[test]
    fn the_benchmark_runs_and_its_shares_are_rate_times_cost() -> Result<(), SigningBenchError> {
        let bench = signing(&SigningBenchOptions {
            params: 1000,
            deltas_per_second: 4.0,
            records_per_second: 100.0,
            batches: 1,
        })?;
        assert_eq!(bench.rows.len(), 7);
        assert_eq!(bench.scheme, "ECDSA_NISTP256_SHA256");
        for row in &bench.rows {
            assert!(row.micros.is_finite() && row.micros > 0.0, "{row:?}");
            assert!(row.micros_min <= row.micros && row.micros <= row.micros_max);
            if let (Some(rate), Some(share)) = (row.rate_per_second, row.cpu_share) {
                assert!((share - rate * row.micros * 1e-6).abs() < 1e-12, "{row:?}");
            }
        }
        let text = bench.to_string();
        assert!(text.contains("hash + verify delta"), "{text}");
        Ok(())
    }
}
