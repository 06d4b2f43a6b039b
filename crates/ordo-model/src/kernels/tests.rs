//! Tests of the f32 kernels against scalar code and each other.
use super::*;

fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() as f32;
        }
    }
    out
}

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
}

#[test]
fn matmul_t_matches_naive_for_few_and_many_rows_and_odd_sizes() {
    for &(m, k, n) in &[(1, 7, 3), (5, 19, 10), (16, 64, 33), (63, 40, 9), (64, 40, 9), (130, 33, 17)] {
        let (x, w) = (values(m * k, 1), values(n * k, 2));
        let want = naive(&x, m, k, &w, n);
        let mut got = vec![0f32; m * n];
        matmul_t(&x, m, k, &w, n, &mut got, false);
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(err < 1e-4, "{m}x{k}x{n}: {err}");
        // Accumulating adds the product once more.
        matmul_t(&x, m, k, &w, n, &mut got, true);
        let err = got.iter().zip(&want).map(|(a, b)| (a - 2.0 * b).abs()).fold(0.0, f32::max);
        assert!(err < 2e-4, "{m}x{k}x{n} accumulate: {err}");
    }
}

#[test]
fn a_rows_values_do_not_depend_on_the_other_rows() {
    // k with a tail past the vector width, n with a block of fewer than four weight rows; rows
    // run in pairs and alone (odd m).
    let (k, n, m) = (53, 22, 11);
    let (x, w) = (values(m * k, 3), values(n * k, 4));
    let mut all = vec![0f32; m * n];
    matmul_t(&x, m, k, &w, n, &mut all, false);
    for i in 0..m {
        let mut one = vec![0f32; n];
        matmul_t(&x[i * k..(i + 1) * k], 1, k, &w, n, &mut one, false);
        assert_eq!(&all[i * n..(i + 1) * n], &one[..], "row {i}: bit-identical");
    }
}

#[test]
fn exp_matches_std_to_two_ulp_and_handles_the_edges() {
    let mut xs: Vec<f32> = (0..20_000).map(|i| -87.0 + i as f32 * (175.0 / 20_000.0)).collect();
    xs.extend([0.0, -0.0, 1e-8, -1e-8, 88.0, -87.3]);
    let mut got = xs.clone();
    exp_in_place(&mut got);
    for (x, g) in xs.iter().zip(&got) {
        let want = x.exp();
        let ulp = (want.to_bits() as i64 - g.to_bits() as i64).abs();
        assert!(ulp <= 2, "exp({x}): {g} vs {want} ({ulp} ulp)");
    }
    let mut edges = [f32::NEG_INFINITY, -1000.0, -87.5, f32::NAN, 1.0, 2.0, 3.0, 4.0, 5.0];
    exp_in_place(&mut edges);
    assert_eq!(&edges[..3], &[0.0, 0.0, 0.0]);
    assert!(edges[3].is_nan());
    assert!((edges[8] - 5f32.exp()).abs() < 1e-4);
}

#[test]
fn softmax_masks_and_normalises() {
    let mut x = [1.0f32, f32::NEG_INFINITY, 3.0];
    assert!(softmax_in_place(&mut x));
    let e = (1.0f32 - 3.0).exp();
    assert!((x[0] - e / (1.0 + e)).abs() < 1e-7 && x[1] == 0.0 && (x[2] - 1.0 / (1.0 + e)).abs() < 1e-7);
    let mut all_masked = [f32::NEG_INFINITY; 3];
    assert!(!softmax_in_place(&mut all_masked));
}

#[test]
fn rotation_then_inverse_rotation_is_the_identity() {
    let (cos, sin) = ([0.6f32, 1.0], [0.8f32, 0.0]);
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut y = x;
    rotate_half_in_place(&mut y, &cos, &sin, 1.0);
    // Pair (x1[0], x2[0]) = (1, 3) rotated by the angle with cos 0.6, sin 0.8.
    assert!((y[0] - (0.6 - 3.0 * 0.8)).abs() < 1e-6 && (y[2] - (3.0 * 0.6 + 0.8)).abs() < 1e-6);
    rotate_half_in_place(&mut y, &cos, &sin, -1.0);
    assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-6), "{y:?}");
}

#[test]
fn gemm_into_matches_naive_for_every_transpose() {
    let (m, k, n) = (67, 13, 9);
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = values(m * k, 3);
        let b = values(k * n, 4);
        let at = |i: usize, p: usize| if ta { a[p * m + i] } else { a[i * k + p] };
        let bt = |p: usize, j: usize| if tb { b[j * k + p] } else { b[p * n + j] };
        let (ra, ca) = if ta { (k, m) } else { (m, k) };
        let (rb, cb) = if tb { (n, k) } else { (k, n) };
        // Each operand as stored, and stored with its rows `pad` values apart beyond its columns
        // (NaN in the gaps, which a product that read them would carry to its output).
        for pad in [0, 3] {
            let padded = |data: &[f32], rows: usize, cols: usize| -> Vec<f32> {
                let mut out = vec![f32::NAN; rows * (cols + pad)];
                for r in 0..rows {
                    out[r * (cols + pad)..r * (cols + pad) + cols].copy_from_slice(&data[r * cols..(r + 1) * cols]);
                }
                out
            };
            let (pa, pb) = (padded(&a, ra, ca), padded(&b, rb, cb));
            let opa = Operand { data: &pa, rows: ra, cols: ca, row_stride: ca + pad, transposed: ta };
            let opb = Operand { data: &pb, rows: rb, cols: cb, row_stride: cb + pad, transposed: tb };
            let mut out = vec![1f32; m * n];
            gemm_into(opa, opb, &mut out, true);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = 1.0 + (0..k).map(|p| at(i, p) * bt(p, j)).sum::<f32>();
                    let got = out[i * n + j];
                    assert!((got - want).abs() < 1e-4, "{ta} {tb} pad {pad} ({i}, {j}): {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn dot_and_axpy_match_scalar_code() {
    for n in [0, 1, 7, 8, 15, 16, 17, 100] {
        let (a, b) = (values(n, 5), values(n, 6));
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - want).abs() < 1e-4, "dot {n}");
        let mut y = b.clone();
        axpy(0.5, &a, &mut y);
        for i in 0..n {
            assert!((y[i] - (b[i] + 0.5 * a[i])).abs() < 1e-6, "axpy {n} at {i}");
        }
    }
}

#[test]
fn strided_dots_and_weighted_sums_are_bit_identical_to_dot_and_axpy() {
    // Head widths with and without vector tails, key counts with and without a block of four left over,
    // and a stride wider than the head (the other heads of a cache row between).
    for hd in [1, 5, 8, 16, 24, 32, 37, 64, 72, 130] {
        for keys in [1, 3, 4, 5, 9] {
            let stride = hd + 11;
            let rows = values(keys * stride, 7);
            let q = values(hd, 8);
            let mut got = vec![0f32; keys];
            dot_strided(&q, &rows, stride, &mut got);
            for (s, g) in got.iter().enumerate() {
                let want = dot(&q, &rows[s * stride..s * stride + hd]);
                assert_eq!(g.to_bits(), want.to_bits(), "dot hd {hd} keys {keys} row {s}");
            }
            let p = values(keys, 9);
            let mut sum = vec![f32::NAN; hd];
            weighted_rows_sum(&p, &rows, stride, &mut sum);
            let mut want = vec![0f32; hd];
            for (s, &ps) in p.iter().enumerate() {
                axpy(ps, &rows[s * stride..s * stride + hd], &mut want);
            }
            for (j, (g, w)) in sum.iter().zip(&want).enumerate() {
                assert_eq!(g.to_bits(), w.to_bits(), "sum hd {hd} keys {keys} col {j}");
            }
        }
    }
}
