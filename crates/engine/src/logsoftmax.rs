//! Log-softmax over one row of logits: the hot loop once decoding runs on a GPU.
//!
//! The row is reduced in 16 fixed f32 lanes with a polynomial `exp` (|relative error| < 2e-7, far below
//! llama.cpp's own noise) and f64 lane accumulators, then the lanes are summed in a fixed pairwise order.
//! The order of every floating-point operation depends only on the row's length, never on the thread that
//! runs it, the number of threads, or the instruction set: the AVX2 build of the kernel executes the same
//! IEEE operations as the portable one (Rust never fuses multiply-adds on its own), so the numbers are
//! bit-identical on any x86-64 CPU and any thread count.

/// Lanes per block: two AVX2 registers of f32.
const LANES: usize = 16;

/// What the scorer needs from a row: its maximum and log Σ exp(z − max) at T = 1 and at the temperature.
#[derive(Debug, Clone, Copy)]
pub struct RowStats {
    pub max: f32,
    /// ln Σ exp(z_i − max).
    pub log_sum: f64,
    /// ln Σ exp((z_i − max) / T); equal to `log_sum` when T = 1.
    pub log_sum_scaled: f64,
}

/// Temperature in the two precisions the kernel uses (f32 inside the sum, f64 for the reported value).
#[derive(Debug, Clone, Copy)]
pub struct Temperature {
    value: f64,
    inv_f32: f32,
}

impl Temperature {
    /// `t` must be finite and positive (the API layer checks this with a message naming the field).
    pub fn new(t: f64) -> Self {
        debug_assert!(t.is_finite() && t > 0.0);
        Temperature {
            value: t,
            inv_f32: (1.0 / t) as f32,
        }
    }

    /// At T = 1 the sampling statistics equal the plain ones, so the second pass is skipped.
    pub fn is_one(&self) -> bool {
        self.value == 1.0
    }
}

/// log p(token) at T = 1 and at the temperature, from the row statistics.
#[inline]
pub fn token_logprobs(z: f32, stats: &RowStats, t: &Temperature) -> (f64, f64) {
    let d = f64::from(z) - f64::from(stats.max);
    let lp = d - stats.log_sum;
    let slp = if t.is_one() {
        lp
    } else {
        d / t.value - stats.log_sum_scaled
    };
    (lp, slp)
}

/// Error when the model produced NaN or infinite logits (a broken model or backend, never a valid score).
#[derive(Debug, thiserror::Error)]
#[error("the model produced non-finite logits")]
pub struct NonFiniteLogits;

/// Computes the row statistics. Deterministic for a given row (see the module docs).
pub fn row_stats(row: &[f32], t: &Temperature) -> Result<RowStats, NonFiniteLogits> {
    let mut one = row_stats_at(row, std::slice::from_ref(t))?;
    Ok(one.remove(0))
}

/// [`row_stats`] at each of `temperatures` (one result each, in order), with the maximum and the T = 1 sum
/// computed once: each result has the bits `row_stats` gives it alone (the same passes on the same row).
pub fn row_stats_at(
    row: &[f32],
    temperatures: &[Temperature],
) -> Result<Vec<RowStats>, NonFiniteLogits> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { row_stats_avx2(row, temperatures) };
        }
    }
    row_stats_portable(row, temperatures)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_stats_avx2(
    row: &[f32],
    temperatures: &[Temperature],
) -> Result<Vec<RowStats>, NonFiniteLogits> {
    row_stats_impl(row, temperatures)
}

fn row_stats_portable(
    row: &[f32],
    temperatures: &[Temperature],
) -> Result<Vec<RowStats>, NonFiniteLogits> {
    row_stats_impl(row, temperatures)
}

#[inline(always)]
fn row_stats_impl(
    row: &[f32],
    temperatures: &[Temperature],
) -> Result<Vec<RowStats>, NonFiniteLogits> {
    let max = max_f32(row);
    if !max.is_finite() {
        return Err(NonFiniteLogits);
    }
    let log_sum = sum_exp(row, max, 1.0).ln();
    if !log_sum.is_finite() {
        return Err(NonFiniteLogits);
    }
    temperatures
        .iter()
        .map(|t| {
            let log_sum_scaled = if t.is_one() {
                log_sum
            } else {
                sum_exp(row, max, t.inv_f32).ln()
            };
            if !log_sum_scaled.is_finite() {
                return Err(NonFiniteLogits);
            }
            Ok(RowStats {
                max,
                log_sum,
                log_sum_scaled,
            })
        })
        .collect()
}

#[inline(always)]
fn max_f32(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut nan = false;
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..LANES {
            // `>` is false for NaN: track NaN separately so it cannot hide.
            nan |= c[j].is_nan();
            acc[j] = if c[j] > acc[j] { c[j] } else { acc[j] };
        }
    }
    for (j, &v) in tail.iter().enumerate() {
        nan |= v.is_nan();
        acc[j] = if v > acc[j] { v } else { acc[j] };
    }
    if nan {
        return f32::NAN;
    }
    acc.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Σ exp((z_i − max) · scale), f32 `exp` per element, f64 accumulation per lane, fixed lane reduction.
#[inline(always)]
fn sum_exp(row: &[f32], max: f32, scale: f32) -> f64 {
    let mut acc = [0f64; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        let mut e = [0f32; LANES];
        for j in 0..LANES {
            e[j] = exp_f32((c[j] - max) * scale);
        }
        for j in 0..LANES {
            acc[j] += f64::from(e[j]);
        }
    }
    for (j, &v) in tail.iter().enumerate() {
        acc[j] += f64::from(exp_f32((v - max) * scale));
    }
    pairwise16(&acc)
}

#[inline(always)]
fn pairwise16(a: &[f64; LANES]) -> f64 {
    let mut s = [0f64; 8];
    for j in 0..8 {
        s[j] = a[j] + a[j + 8];
    }
    let s4 = [s[0] + s[4], s[1] + s[5], s[2] + s[6], s[3] + s[7]];
    (s4[0] + s4[2]) + (s4[1] + s4[3])
}

/// exp(x) for f32 in plain arithmetic (Cephes `expf` polynomial), so that the compiler vectorises it.
/// Returns exactly 0 below the smallest normal result; the scorer only calls it with x ≤ 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer without a `round` instruction.
    const ROUND: f32 = 12_582_912.0;
    const MIN_X: f32 = -87.336_55;
    const MAX_X: f32 = 88.376_26;
    let xc = x.clamp(MIN_X, MAX_X);
    let shifted = xc * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let r2 = r * r;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * r2 + r + 1.0;
    // n is an integer in [-126, 128): build 2^n from its exponent bits.
    let ni = (shifted.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let pow2 = f32::from_bits(((ni + 127) as u32) << 23);
    if x < MIN_X { 0.0 } else { y * pow2 }
}

/// The `k` highest logits of a row as (token id, logit), highest first, ties broken by the lower id.
/// One pass with a k-slot buffer; the vocabulary is never sorted.
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    let mut threshold = f32::NEG_INFINITY;
    for (block_index, block) in row.chunks(LANES).enumerate() {
        let full = best.len() == k;
        if full && !block.iter().any(|&v| v > threshold) {
            continue;
        }
        for (j, &v) in block.iter().enumerate() {
            if best.len() == k && v <= threshold {
                continue;
            }
            let id = (block_index * LANES + j) as u32;
            // Insert after every entry that is at least as large (earlier ids win ties).
            let at = best.partition_point(|&(_, b)| b >= v);
            best.insert(at, (id, v));
            best.truncate(k);
            if best.len() == k {
                threshold = best[k - 1].1;
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 reference: log-softmax with libm's `exp`.
    fn reference(row: &[f32], t: f64) -> Vec<f64> {
        let z: Vec<f64> = row.iter().map(|&v| f64::from(v) / t).collect();
        let m = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|v| (v - m).exp()).sum();
        z.iter().map(|v| v - m - s.ln()).collect()
    }

    fn pseudo_row(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) * 30.0 - 15.0
            })
            .collect()
    }

    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let got = f64::from(exp_f32(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.001;
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-100.0), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn log_softmax_matches_f64_reference() {
        for &(n, t) in &[(49_152usize, 1.0), (262_144, 0.5), (37, 1.7), (5, 1.0)] {
            let row = pseudo_row(n, n as u64);
            let temp = Temperature::new(t);
            let stats = row_stats(&row, &temp).unwrap();
            let at1 = reference(&row, 1.0);
            let att = reference(&row, t);
            for i in (0..n).step_by(97.min(n)) {
                let (lp, slp) = token_logprobs(row[i], &stats, &temp);
                assert!(
                    (lp - at1[i]).abs() < 1e-6,
                    "n={n} i={i}: {lp} vs {}",
                    at1[i]
                );
                assert!(
                    (slp - att[i]).abs() < 1e-6,
                    "n={n} i={i}: {slp} vs {}",
                    att[i]
                );
                assert!(lp <= 0.0 && slp <= 0.0);
            }
            // The probabilities sum to one.
            let total: f64 = row
                .iter()
                .map(|&z| token_logprobs(z, &stats, &temp).0.exp())
                .sum();
            assert!((total - 1.0).abs() < 1e-6, "sum of probabilities {total}");
        }
    }

    #[test]
    fn portable_and_dispatched_kernels_agree_bit_for_bit() {
        let row = pseudo_row(262_147, 7);
        let t = Temperature::new(0.7);
        let a = row_stats(&row, &t).unwrap();
        let b = row_stats_portable(&row, std::slice::from_ref(&t)).unwrap()[0];
        assert_eq!(a.max.to_bits(), b.max.to_bits());
        assert_eq!(a.log_sum.to_bits(), b.log_sum.to_bits());
        assert_eq!(a.log_sum_scaled.to_bits(), b.log_sum_scaled.to_bits());
    }

    #[test]
    fn several_temperatures_at_once_equal_each_alone() {
        let row = pseudo_row(49_152, 11);
        let ts: Vec<Temperature> = [0.5, 1.0, 1.5, 0.5]
            .into_iter()
            .map(Temperature::new)
            .collect();
        let together = row_stats_at(&row, &ts).unwrap();
        assert_eq!(together.len(), ts.len());
        for (t, s) in ts.iter().zip(&together) {
            let alone = row_stats(&row, t).unwrap();
            assert_eq!(s.max.to_bits(), alone.max.to_bits());
            assert_eq!(s.log_sum.to_bits(), alone.log_sum.to_bits());
            assert_eq!(s.log_sum_scaled.to_bits(), alone.log_sum_scaled.to_bits());
        }
        // Not vacuous: the temperatures give different scaled sums.
        assert_ne!(together[0].log_sum_scaled, together[2].log_sum_scaled);
    }

    #[test]
    fn non_finite_rows_are_errors() {
        let t = Temperature::new(1.0);
        let mut row = pseudo_row(100, 1);
        row[50] = f32::NAN;
        assert!(row_stats(&row, &t).is_err());
        row[50] = f32::INFINITY;
        assert!(row_stats(&row, &t).is_err());
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut row = pseudo_row(10_000, 3);
        row[17] = 100.0;
        row[9_000] = 100.0; // tie: lower id first
        for k in [1usize, 2, 5, 20] {
            let got = top_k(&row, k);
            let mut idx: Vec<u32> = (0..row.len() as u32).collect();
            idx.sort_by(|&a, &b| {
                row[b as usize]
                    .partial_cmp(&row[a as usize])
                    .unwrap()
                    .then(a.cmp(&b))
            });
            let want: Vec<(u32, f32)> = idx[..k].iter().map(|&i| (i, row[i as usize])).collect();
            assert_eq!(got, want, "k={k}");
        }
        assert_eq!(top_k(&row, 0), vec![]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![(1, 2.0), (0, 1.0)]);
    }
}
