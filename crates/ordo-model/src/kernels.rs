//! f32 kernels of the CPU sampling and training paths: dot products, axpy and `x · Wᵀ`, with AVX2/FMA where the CPU has it.
//!
//! `matmul_t` hands many-row products to the `gemm` crate; for the few rows of a decoding step
//! gemm spends most of its time packing the weight matrix, so those products run here as plain
//! dot products over the weight's contiguous rows (four at a time, threads split the rows).
//! Each output element is computed the same way whatever the number of rows or threads, so a
//! row's values do not depend on which other rows are in the batch.

use rayon::prelude::*;

/// Below this many rows `matmul_t` uses the dot-product kernel instead of gemm.
pub(crate) const SMALL_ROWS: usize = 64;

/// Whether the AVX2 + FMA kernels can run here (checked once; the answer is cached by std).
#[inline]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `a · b` over the shorter length.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above); slices are cut to the same length.
        return unsafe { x86::dot(&a[..n], &b[..n]) };
    }
    dot_portable(&a[..n], &b[..n])
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as in `dot`.
        return unsafe { x86::axpy(alpha, &x[..n], &mut y[..n]) };
    }
    for (y, &x) in y[..n].iter_mut().zip(&x[..n]) {
        *y += alpha * x;
    }
}

/// Panics unless `rows` holds `count` rows of `width` values, `stride` apart.
fn assert_strided_rows(rows: &[f32], count: usize, stride: usize, width: usize, what: &str) {
    if let Some(last) = count.checked_sub(1) {
        assert!(rows.len() >= last * stride + width, "{what}: rows too short");
    }
}

/// `out[s] = dot(q, rows[s * stride..][..q.len()])` for every `s < out.len()`: a query against a
/// strided run of keys (one head of a KV cache), each value bit for bit what [`dot`] gives.
pub fn dot_strided(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    let n = q.len();
    assert_strided_rows(rows, out.len(), stride, n, "dot_strided");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; every row read lies inside `rows` (asserted above).
        return unsafe { x86::dot_strided(q, rows, stride, out) };
    }
    for (s, o) in out.iter_mut().enumerate() {
        *o = dot(q, &rows[s * stride..s * stride + n]);
    }
}

/// `out = Σ_s p[s] · rows[s * stride..][..out.len()]`, bit for bit what zeroing `out` and calling
/// [`axpy`] once per `s` in order gives (a head's attention-weighted sum of cached values), with the
/// sums held in registers instead of written back per `s`.
pub fn weighted_rows_sum(p: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
    let n = out.len();
    assert_strided_rows(rows, p.len(), stride, n, "weighted_rows_sum");
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: as in `dot_strided`.
        return unsafe { x86::weighted_rows_sum(p, rows, stride, out) };
    }
    out.fill(0.0);
    for (s, &ps) in p.iter().enumerate() {
        axpy(ps, &rows[s * stride..s * stride + n], out);
    }
}

/// `exp` of every element, in place: eight lanes at a time with AVX2/FMA (a Cephes-style
/// polynomial, within 2 ulp of `f32::exp` on [-87.33, 88.37]), else `f32::exp`. Below -87.33 (where
/// `exp` leaves the normal range) the result is 0, so `-inf` gives 0; above 88.37 the AVX2 path
/// saturates at exp(88.37) (about 2.4e38) instead of overflowing to infinity; NaN stays NaN.
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { x86::exp_in_place(x) };
    }
    for v in x.iter_mut() {
        *v = if *v < exp_limits::EXP_LOW { 0.0 } else { v.exp() };
    }
}

/// Constants of the exp kernel shared with its scalar fallback.
mod exp_limits {
    /// Below this, exp is under f32's normal range and the kernels return 0.
    pub const EXP_LOW: f32 = -87.33;
}

/// Softmax in place; entries at `-inf` are masked and become 0. False (and `x` untouched past the
/// scan) when every entry is masked.
pub fn softmax_in_place(x: &mut [f32]) -> bool {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return false;
    }
    for v in x.iter_mut() {
        *v -= max;
    }
    exp_in_place(x);
    let total: f32 = x.iter().sum();
    let inv = 1.0 / total;
    for v in x.iter_mut() {
        *v *= inv;
    }
    true
}

/// The rotary embedding in HF's "rotate half" layout, in place: `x` is one head (`2 * cos.len()`
/// values); `sign` -1 rotates by the negative angle (the inverse, i.e. the backward pass).
pub fn rotate_half_in_place(x: &mut [f32], cos: &[f32], sin: &[f32], sign: f32) {
    let (x1, x2) = x.split_at_mut(cos.len());
    for i in 0..cos.len() {
        let (a, b, s) = (x1[i], x2[i], sign * sin[i]);
        x1[i] = a * cos[i] - b * s;
        x2[i] = b * cos[i] + a * s;
    }
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent partial sums let the compiler vectorise the loop.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + ra.iter().zip(rb).map(|(x, y)| x * y).sum::<f32>()
}

/// A raw output pointer that threads writing disjoint elements may share.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used by `matmul_t_rows`, whose tasks write disjoint output elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// `out[m, n] (+)= x[m, k] · w[n, k]ᵀ`, all row-major; `accumulate` adds to `out`.
pub fn matmul_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "matmul_t: operand sizes");
    if m < SMALL_ROWS {
        matmul_t_rows(x, m, k, w, n, out, accumulate);
        return;
    }
    gemm_into(Operand::plain(x, m, k), Operand::t(w, n, k), out, accumulate);
}

/// A row-major matrix operand of [`gemm_into`]: its values, and whether it is read transposed.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    /// Rows and columns as stored (before any transpose).
    pub rows: usize,
    pub cols: usize,
    /// Values from one stored row to the next (`cols`, or more for padded rows).
    pub row_stride: usize,
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    /// The stored matrix as it is.
    pub fn plain(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Operand { data, rows, cols, row_stride: cols, transposed: false }
    }

    /// The stored matrix as it is, its rows `row_stride` values apart (at least `cols`).
    pub fn padded(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(row_stride >= cols, "Operand::padded: row stride {row_stride} below {cols} columns");
        Operand { data, rows, cols, row_stride, transposed: false }
    }

    /// The stored matrix read transposed.
    pub fn t(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Operand { data, rows, cols, row_stride: cols, transposed: true }
    }

    /// Shape as read: (rows, cols) after the transpose.
    fn shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// (row stride, column stride) as read.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.row_stride as isize)
        } else {
            (self.row_stride as isize, 1)
        }
    }
}

/// `out (+)= a · b` for row-major operands read plain or transposed (`out` row-major, `a`'s rows by
/// `b`'s columns); `accumulate` adds to `out`. The training path's backward products (`dY · W`,
/// `dYᵀ · X`) run through here on the `gemm` crate.
pub fn gemm_into(a: Operand<'_>, b: Operand<'_>, out: &mut [f32], accumulate: bool) {
    gemm_with(a, b, out, accumulate, true);
}

/// [`gemm_into`], on rayon's threads when `parallel`, else on the calling thread.
pub fn gemm_with(a: Operand<'_>, b: Operand<'_>, out: &mut [f32], accumulate: bool, parallel: bool) {
    let (m, n) = product_shape(&a, &b);
    assert!(out.len() >= m * n, "gemm_into: output size");
    // SAFETY: out holds m x n values (asserted); product_shape checked the operands.
    unsafe { gemm_raw(&a, &b, out.as_mut_ptr(), accumulate, parallel) }
}

/// `a · b` into a new row-major vector (on rayon's threads), written without zeroing it first.
pub fn product(a: Operand<'_>, b: Operand<'_>) -> Vec<f32> {
    let (m, n) = product_shape(&a, &b);
    let mut out: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the capacity holds m x n values, and gemm_raw without `accumulate` writes every one of
    // them without reading any (gemm's `read_dst` false), so all are initialised before set_len.
    unsafe {
        gemm_raw(&a, &b, out.as_mut_ptr(), false, true);
        out.set_len(m * n);
    }
    out
}

/// `x[m, k] · w[n, k]ᵀ` into a new vector: [`matmul_t`] without zeroing the output first.
pub fn matmul_t_new(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    if m < SMALL_ROWS {
        let mut out = vec![0f32; m * n];
        matmul_t(x, m, k, w, n, &mut out, false);
        return out;
    }
    product(Operand::plain(x, m, k), Operand::t(w, n, k))
}

/// The (rows, cols) of `a · b`, checking that the operands fit together and hold their values.
fn product_shape(a: &Operand<'_>, b: &Operand<'_>) -> (usize, usize) {
    let ((m, k), (kb, n)) = (a.shape(), b.shape());
    assert!(k == kb, "gemm_into: inner dimensions {k} and {kb} differ");
    let holds = |o: &Operand<'_>| o.rows == 0 || o.data.len() >= (o.rows - 1) * o.row_stride + o.cols;
    assert!(holds(a) && holds(b), "gemm_into: operand sizes");
    (m, n)
}

/// `out (+)= a · b` through the `gemm` crate.
///
/// # Safety
/// `out` must be valid for writing `m x n` values (and for reading them when `accumulate`), where
/// `(m, n)` is [`product_shape`] of the operands, which must have passed its checks.
unsafe fn gemm_raw(a: &Operand<'_>, b: &Operand<'_>, out: *mut f32, accumulate: bool, parallel: bool) {
    let ((m, k), (_, n)) = (a.shape(), b.shape());
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            std::ptr::write_bytes(out, 0, m * n);
        }
        return;
    }
    let ((ars, acs), (brs, bcs)) = (a.strides(), b.strides());
    // Every index gemm touches is inside the operands (rows x cols through the strides above) and
    // inside out (m x n with row stride n).
    gemm::gemm(
        m,
        n,
        k,
        out,
        1,
        n as isize,
        accumulate,
        a.data.as_ptr(),
        acs,
        ars,
        b.data.as_ptr(),
        bcs,
        brs,
        1.0,
        1.0,
        false,
        false,
        false,
        if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None },
    );
}

/// The few-rows product: blocks of four weight rows, each dotted with every row of `x`.
fn matmul_t_rows(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, out: &mut [f32], accumulate: bool) {
    let ptr = OutPtr(out.as_mut_ptr());
    let blocks = n.div_ceil(4);
    // Enough blocks per task that a task is worth its scheduling.
    let per_task = (blocks / (4 * rayon::current_num_threads())).max(1);
    (0..blocks).into_par_iter().with_min_len(per_task).for_each(move |b| {
        let ptr = ptr;
        let j0 = b * 4;
        let rows = (n - j0).min(4);
        let mut i = 0;
        while i < m {
            // Two rows of x at a time against the block's four weight rows (eight independent
            // accumulators keep the FMA units busy), else one: the same arithmetic per element.
            let pair = rows == 4 && i + 1 < m;
            let mut s = [[0f32; 4]; 2];
            if pair {
                s = dot2x4(&x[i * k..(i + 2) * k], &w[j0 * k..(j0 + 4) * k], k);
            } else if rows == 4 {
                s[0] = dot4(&x[i * k..(i + 1) * k], &w[j0 * k..(j0 + 4) * k], k);
            } else {
                for (r, v) in s[0].iter_mut().enumerate().take(rows) {
                    *v = dot(&x[i * k..(i + 1) * k], &w[(j0 + r) * k..(j0 + r + 1) * k]);
                }
            }
            for (a, sa) in s.iter().enumerate().take(1 + pair as usize) {
                for (r, v) in sa.iter().enumerate().take(rows) {
                    // SAFETY: i + a < m and j0 + r < n, inside `out` (asserted by the caller);
                    // element (i + a, j0 + r) belongs to block b alone.
                    unsafe {
                        let o = ptr.0.add((i + a) * n + j0 + r);
                        *o = if accumulate { *o + v } else { *v };
                    }
                }
            }
            i += 1 + pair as usize;
        }
    });
}

/// Four dot products of `x` with four consecutive rows of `w4` (each `k` long).
#[inline]
fn dot4(x: &[f32], w4: &[f32], k: usize) -> [f32; 4] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; w4 holds 4 rows of k and x holds k values.
        return unsafe { x86::dot4(x, w4, k) };
    }
    [0, 1, 2, 3].map(|r| dot_portable(&x[..k], &w4[r * k..(r + 1) * k]))
}

/// [`dot4`] for two consecutive rows of `x2` (each `k` long), element for element the same arithmetic.
#[inline]
fn dot2x4(x2: &[f32], w4: &[f32], k: usize) -> [[f32; 4]; 2] {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA; x2 holds 2 rows of k and w4 holds 4 rows of k.
        return unsafe { x86::dot2x4(x2, w4, k) };
    }
    [dot4(&x2[..k], w4, k), dot4(&x2[k..2 * k], w4, k)]
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_in_place(x: &mut [f32]) {
        let n = x.len();
        let p = x.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(p.add(i), exp8(_mm256_loadu_ps(p.add(i))));
            i += 8;
        }
        if i < n {
            let mut tail = [0f32; 8];
            tail[..n - i].copy_from_slice(&x[i..]);
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(tail.as_ptr())));
            x[i..].copy_from_slice(&out[..n - i]);
        }
    }

    /// exp of eight lanes: x = k ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6 polynomial
    /// (Cephes `expf`), times 2^k built in the exponent bits.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let low = _mm256_set1_ps(super::exp_limits::EXP_LOW);
        // max/min with the operand order that passes NaN through.
        let xc = _mm256_min_ps(_mm256_set1_ps(88.37), _mm256_max_ps(low, x));
        let k = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693_359_4), xc);
        let r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut y = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
            y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
        }
        y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let pow2k =
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23));
        let y = _mm256_mul_ps(y, pow2k);
        // Under the normal range (and -inf): 0.
        _mm256_andnot_ps(_mm256_cmp_ps(x, low, _CMP_LT_OQ), y)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// # Safety
    /// AVX2 and FMA must be available; `a` and `b` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 16 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i + 8)), _mm256_loadu_ps(pb.add(i + 8)), acc1);
            i += 16;
        }
        if i + 8 <= n {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
            i += 8;
        }
        let mut s = hsum(_mm256_add_ps(acc0, acc1));
        while i < n {
            s += *pa.add(i) * *pb.add(i);
            i += 1;
        }
        s
    }

    /// # Safety
    /// AVX2 and FMA must be available; `x` and `y` have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        while i + 8 <= n {
            _mm256_storeu_ps(py.add(i), _mm256_fmadd_ps(a, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))));
            i += 8;
        }
        while i < n {
            *py.add(i) += alpha * *px.add(i);
            i += 1;
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `rows` holds `out.len()` rows of `q.len()` at `stride`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot_strided(q: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
        let n = q.len();
        let (pq, pr) = (q.as_ptr(), rows.as_ptr());
        let mut s = 0;
        // Four keys at a time, each with `dot`'s two accumulators and its order of operations.
        while s + 4 <= out.len() {
            let rs = [0, 1, 2, 3].map(|r| pr.add((s + r) * stride));
            let mut acc0 = [_mm256_setzero_ps(); 4];
            let mut acc1 = [_mm256_setzero_ps(); 4];
            let mut i = 0;
            while i + 16 <= n {
                let (q0, q1) = (_mm256_loadu_ps(pq.add(i)), _mm256_loadu_ps(pq.add(i + 8)));
                for r in 0..4 {
                    acc0[r] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(rs[r].add(i)), acc0[r]);
                    acc1[r] = _mm256_fmadd_ps(q1, _mm256_loadu_ps(rs[r].add(i + 8)), acc1[r]);
                }
                i += 16;
            }
            if i + 8 <= n {
                let q0 = _mm256_loadu_ps(pq.add(i));
                for r in 0..4 {
                    acc0[r] = _mm256_fmadd_ps(q0, _mm256_loadu_ps(rs[r].add(i)), acc0[r]);
                }
                i += 8;
            }
            for r in 0..4 {
                let mut v = hsum(_mm256_add_ps(acc0[r], acc1[r]));
                for j in i..n {
                    v += *pq.add(j) * *rs[r].add(j);
                }
                out[s + r] = v;
            }
            s += 4;
        }
        while s < out.len() {
            out[s] = dot(q, std::slice::from_raw_parts(pr.add(s * stride), n));
            s += 1;
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `rows` holds `p.len()` rows of `out.len()` at `stride`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn weighted_rows_sum(p: &[f32], rows: &[f32], stride: usize, out: &mut [f32]) {
        let n = out.len();
        let (pr, po) = (rows.as_ptr(), out.as_mut_ptr());
        let vec_end = n - n % 8;
        // Up to 64 columns at a time in eight registers, each summed over every row in order with
        // `axpy`'s fused multiply-add.
        let mut c = 0;
        while c < vec_end {
            let lanes = ((vec_end - c) / 8).min(8);
            let mut acc = [_mm256_setzero_ps(); 8];
            for (s, &ps) in p.iter().enumerate() {
                let a = _mm256_set1_ps(ps);
                let row = pr.add(s * stride + c);
                for (l, v) in acc.iter_mut().enumerate().take(lanes) {
                    *v = _mm256_fmadd_ps(a, _mm256_loadu_ps(row.add(8 * l)), *v);
                }
            }
            for (l, v) in acc.iter().enumerate().take(lanes) {
                _mm256_storeu_ps(po.add(c + 8 * l), *v);
            }
            c += 8 * lanes;
        }
        // `axpy`'s scalar tail: a separate multiply and add.
        for j in vec_end..n {
            let mut v = 0f32;
            for (s, &ps) in p.iter().enumerate() {
                v += ps * *pr.add(s * stride + j);
            }
            *po.add(j) = v;
        }
    }

    /// # Safety
    /// AVX2 and FMA must be available; `x` holds at least `k` values and `w4` at least `4 k`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot4(x: &[f32], w4: &[f32], k: usize) -> [f32; 4] {
        let (px, pw) = (x.as_ptr(), w4.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i + 8 <= k {
            let xv = _mm256_loadu_ps(px.add(i));
            for (r, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(pw.add(r * k + i)), *a);
            }
            i += 8;
        }
        let mut s = [hsum(acc[0]), hsum(acc[1]), hsum(acc[2]), hsum(acc[3])];
        while i < k {
            for (r, v) in s.iter_mut().enumerate() {
                *v += *px.add(i) * *pw.add(r * k + i);
            }
            i += 1;
        }
        s
    }

    /// [`dot4`] for two rows of x at once.
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `x2` holds at least `2 k` values and `w4` at least `4 k`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)]
    pub unsafe fn dot2x4(x2: &[f32], w4: &[f32], k: usize) -> [[f32; 4]; 2] {
        let (px, pw) = (x2.as_ptr(), w4.as_ptr());
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        let mut i = 0;
        while i + 8 <= k {
            let x0 = _mm256_loadu_ps(px.add(i));
            let x1 = _mm256_loadu_ps(px.add(k + i));
            for r in 0..4 {
                let wv = _mm256_loadu_ps(pw.add(r * k + i));
                acc[0][r] = _mm256_fmadd_ps(x0, wv, acc[0][r]);
                acc[1][r] = _mm256_fmadd_ps(x1, wv, acc[1][r]);
            }
            i += 8;
        }
        let mut s = [[0f32; 4]; 2];
        for a in 0..2 {
            s[a] = [hsum(acc[a][0]), hsum(acc[a][1]), hsum(acc[a][2]), hsum(acc[a][3])];
            for j in i..k {
                for (r, v) in s[a].iter_mut().enumerate() {
                    *v += *px.add(a * k + j) * *pw.add(r * k + j);
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests;
