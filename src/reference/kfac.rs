//! Kronecker-factor references in f64: K-FAC factor statistics and their two running-average
//! conventions (KAISA / gpauloski kfac-pytorch, and kfac-jax's bias-corrected weight), kfac-jax's
//! π-corrected damping, KAISA's inverse and eigen preconditioning paths with its KL clip,
//! MKOR's rank-1 Sherman–Morrison inverse factors, and M-FAC's dynamic inverse-Fisher–vector
//! product (IST-DASLab `optim.py`) with the naive Woodbury recursion it is tested against.
//! Written from the published algorithms and reference code (see shared/ALGORITHMS.md,
//! "Kronecker factors"), independently of the shaders.
//!
//! Conventions: a linear layer y = W·x (+ b) has W `out`×`in`; its gradient ∇W is a row-major
//! `out`×`cols` matrix where `cols` = in + 1 when the layer has a bias, the bias gradient being
//! the last column (the layout of kfac-pytorch and MKOR). Factor A is `cols`×`cols`, G is
//! `out`×`out`. Every function panics on slices of the wrong length (or the other
//! preconditions it documents): these are test references, so a misuse should fail loudly.

pub use super::linalg::identity;
use super::linalg::{frobenius, gemm, spd_inverse, syrk_t};
use super::splitmix::SplitMix64;

/// The running-average decay of KAISA and kfac-jax (and MKOR's hard-coded blend weight).
pub const FACTOR_DECAY: f64 = 0.95;
/// kfac-pytorch's default damping γ (inverse and eigen paths).
pub const KAISA_DAMPING: f64 = 1e-3;
/// kfac-pytorch's default KL-clip bound.
pub const KL_CLIP: f64 = 1e-3;
/// MKOR's clamp on the scaled per-sample statistics (`clipping_value`).
pub const MKOR_CLAMP: f64 = 100.0;
/// M-FAC's default damping.
pub const MFAC_DAMP: f64 = 1e-5;

/// [x | 1] (`batch`×(`in_dim` + 1)) when `bias`, else a copy of x.
fn with_bias(batch: usize, in_dim: usize, x: &[f64], bias: bool) -> (usize, Vec<f64>) {
    assert_eq!(x.len(), batch * in_dim, "x must be batch×in_dim");
    if !bias {
        return (in_dim, x.to_vec());
    }
    let cols = in_dim + 1;
    let mut out = vec![1.0; batch * cols];
    for b in 0..batch {
        out[b * cols..b * cols + in_dim].copy_from_slice(&x[b * in_dim..(b + 1) * in_dim]);
    }
    (cols, out)
}

/// K-FAC input factor A = [x | 1]ᵀ[x | 1] / B for activations `x` (`batch`×`in_dim`), the ones
/// column appended when `bias`: a symmetric (in_dim + bias)² matrix. Panics if `batch` is 0.
pub fn factor_a(batch: usize, in_dim: usize, x: &[f64], bias: bool) -> Vec<f64> {
    assert!(batch > 0, "factor_a needs a non-empty batch");
    let (cols, xt) = with_bias(batch, in_dim, x, bias);
    let mut a = syrk_t(batch, cols, &xt);
    a.iter_mut().for_each(|v| *v /= batch as f64);
    a
}

/// K-FAC output-gradient factor G = dyᵀdy / B for output gradients `dy` (`batch`×`out_dim`):
/// an `out_dim`² symmetric matrix. `dy` holds per-sample gradients (kfac-pytorch multiplies
/// the gradients of a batch-mean loss by B before this; that is the caller's choice here).
pub fn factor_g(batch: usize, out_dim: usize, dy: &[f64]) -> Vec<f64> {
    assert!(batch > 0, "factor_g needs a non-empty batch");
    assert_eq!(dy.len(), batch * out_dim, "dy must be batch×out_dim");
    let mut g = syrk_t(batch, out_dim, dy);
    g.iter_mut().for_each(|v| *v /= batch as f64);
    g
}

/// KAISA's running average, in place: F ← decay·F + (1 − decay)·F_new, no bias correction
/// ([`FACTOR_DECAY`] = 0.95 is the default). kfac-pytorch starts F at [`identity`].
pub fn kaisa_average(f: &mut [f64], new: &[f64], decay: f64) {
    assert_eq!(
        f.len(),
        new.len(),
        "kaisa_average: f and new differ in length"
    );
    f.iter_mut()
        .zip(new)
        .for_each(|(f, n)| *f = decay * *f + (1.0 - decay) * n);
}

/// kfac-jax's bias-corrected running average (its `WeightedMovingAverage` with old-weight
/// multiplier `decay` and new weight 1): each update does w ← decay·w + 1, then
/// F ← (1 − 1/w)·F + (1/w)·F_new. From w = 0 the first update gives F = F_new whatever F held.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KfacJaxAverage {
    /// The accumulated weight w (0 before the first update).
    pub weight: f64,
    /// The old-weight multiplier (default [`FACTOR_DECAY`]).
    pub decay: f64,
}

impl Default for KfacJaxAverage {
    fn default() -> Self {
        Self::new(FACTOR_DECAY)
    }
}

impl KfacJaxAverage {
    /// A fresh average (w = 0) with the given decay.
    pub fn new(decay: f64) -> Self {
        Self { weight: 0.0, decay }
    }

    /// One update of `f` (in place) with `new`.
    pub fn update(&mut self, f: &mut [f64], new: &[f64]) {
        assert_eq!(
            f.len(),
            new.len(),
            "KfacJaxAverage: f and new differ in length"
        );
        self.weight = self.decay * self.weight + 1.0;
        let r = 1.0 / self.weight;
        f.iter_mut()
            .zip(new)
            .for_each(|(f, n)| *f = (1.0 - r) * *f + r * n);
    }
}

fn add_identity(n: usize, f: &mut [f64], s: f64) {
    (0..n).for_each(|i| f[i * n + i] += s);
}

fn trace(n: usize, f: &[f64]) -> f64 {
    (0..n).map(|i| f[i * n + i]).sum()
}

/// kfac-jax's π-corrected factored damping (`pi_adjusted_kronecker_factors`, two factors):
/// c_X = tr(X)/dim_X, c = √(c_A·c_G), A′ = (c/c_A)·A + √λ·I, G′ = (c/c_G)·G + √λ·I, so that
/// A′⊗G′ = (A + π√λ·I)⊗(G + (√λ/π)·I) with π = √(c_A/c_G). Like kfac-jax, when either trace
/// is ≤ 0 (a zero factor) both results are √λ·I. Returns (A′, G′); invert them afterwards.
pub fn pi_damped(
    a_dim: usize,
    a: &[f64],
    g_dim: usize,
    g: &[f64],
    lambda: f64,
) -> (Vec<f64>, Vec<f64>) {
    assert_eq!(a.len(), a_dim * a_dim, "pi_damped: a must be a_dim²");
    assert_eq!(g.len(), g_dim * g_dim, "pi_damped: g must be g_dim²");
    let (ca, cg) = (
        trace(a_dim, a) / a_dim as f64,
        trace(g_dim, g) / g_dim as f64,
    );
    let sqrt_lambda = lambda.sqrt();
    if !(ca > 0.0 && cg > 0.0) {
        let mut ap = identity(a_dim);
        let mut gp = identity(g_dim);
        ap.iter_mut().for_each(|v| *v *= sqrt_lambda);
        gp.iter_mut().for_each(|v| *v *= sqrt_lambda);
        return (ap, gp);
    }
    let c = (ca * cg).sqrt();
    let mut ap: Vec<f64> = a.iter().map(|v| v * (c / ca)).collect();
    let mut gp: Vec<f64> = g.iter().map(|v| v * (c / cg)).collect();
    add_identity(a_dim, &mut ap, sqrt_lambda);
    add_identity(g_dim, &mut gp, sqrt_lambda);
    (ap, gp)
}

/// KAISA's Tikhonov damping of one factor: F + γ·I (kfac-pytorch's inverse path inverts this
/// with γ = [`KAISA_DAMPING`]).
pub fn tikhonov(n: usize, f: &[f64], gamma: f64) -> Vec<f64> {
    assert_eq!(f.len(), n * n, "tikhonov: f must be n×n");
    let mut out = f.to_vec();
    add_identity(n, &mut out, gamma);
    out
}

/// The inverse-path preconditioned gradient G⁻¹·∇W·A⁻¹ (`out`×`cols`) from the already
/// inverted (and damped) factors `g_inv` (`out`²) and `a_inv` (`cols`²).
pub fn precondition_inverse(
    out: usize,
    cols: usize,
    g_inv: &[f64],
    grad: &[f64],
    a_inv: &[f64],
) -> Vec<f64> {
    assert_eq!(g_inv.len(), out * out, "g_inv must be out×out");
    assert_eq!(a_inv.len(), cols * cols, "a_inv must be cols×cols");
    assert_eq!(grad.len(), out * cols, "grad must be out×cols");
    let t = gemm(out, out, cols, g_inv, grad, false, false);
    gemm(out, cols, cols, &t, a_inv, false, false)
}

/// KAISA's eigen-path preconditioned gradient (kfac-pytorch's default):
/// Q_G·[(Q_Gᵀ·∇W·Q_A) ⊘ (d_G·d_Aᵀ + γ)]·Q_Aᵀ, with the eigenvalues `d_g`, `d_a` first clamped
/// at 0 and ⊘ elementwise division. `q_g` (`out`²) and `q_a` (`cols`²) hold the eigenvectors as
/// columns (as [`super::linalg::symmetric_eigen`] returns them). For symmetric factors the
/// result P solves G·P·A + γ·P = ∇W (when no eigenvalue was clamped).
#[allow(clippy::too_many_arguments)]
pub fn precondition_eigen(
    out: usize,
    cols: usize,
    q_g: &[f64],
    d_g: &[f64],
    q_a: &[f64],
    d_a: &[f64],
    grad: &[f64],
    gamma: f64,
) -> Vec<f64> {
    assert!(
        q_g.len() == out * out && d_g.len() == out,
        "q_g must be out×out and d_g of length out"
    );
    assert!(
        q_a.len() == cols * cols && d_a.len() == cols,
        "q_a must be cols×cols and d_a of length cols"
    );
    assert_eq!(grad.len(), out * cols, "grad must be out×cols");
    let t = gemm(out, out, cols, q_g, grad, true, false);
    let mut v = gemm(out, cols, cols, &t, q_a, false, false);
    for i in 0..out {
        for j in 0..cols {
            v[i * cols + j] /= d_g[i].max(0.0) * d_a[j].max(0.0) + gamma;
        }
    }
    let t = gemm(out, out, cols, q_g, &v, false, false);
    gemm(out, cols, cols, &t, q_a, false, true)
}

/// kfac-pytorch's KL-clip scale ν = min(1, √(kl_clip / |Σ lr²·⟨v, g⟩|)), the sum running over
/// every (preconditioned gradient v, raw gradient g) pair of every layer (weights and biases
/// alike; with the bias folded in as the last column one pair per layer covers both). Like
/// current kfac-pytorch, a zero sum gives ν = 1.
pub fn kl_clip_scale(lr: f64, pairs: &[(&[f64], &[f64])], kl_clip: f64) -> f64 {
    let mut vg_sum = 0.0;
    for (v, g) in pairs {
        assert_eq!(v.len(), g.len(), "kl_clip_scale: v and g differ in length");
        vg_sum += v.iter().zip(*g).map(|(v, g)| v * g * lr * lr).sum::<f64>();
    }
    if vg_sum == 0.0 {
        return 1.0;
    }
    (kl_clip / vg_sum.abs()).sqrt().min(1.0)
}

/// The [`mlp_fixture`] architecture: (in, out, bias) per layer.
pub const MLP_LAYERS: [(usize, usize, bool); 3] = [(13, 17, true), (17, 9, true), (9, 5, false)];
/// The [`mlp_fixture`] batch size.
pub const MLP_BATCH: usize = 32;

/// One layer of [`MlpFixture`]; all matrices row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpLayer {
    /// Input width (without the bias column).
    pub in_dim: usize,
    /// Output width.
    pub out_dim: usize,
    /// Whether the layer has a bias (folded in as the last column of `weight` and `grad`).
    pub bias: bool,
    /// [W | b], `out_dim`×[`cols`](Self::cols).
    pub weight: Vec<f64>,
    /// The layer's input activations x, `batch`×`in_dim`.
    pub x: Vec<f64>,
    /// Per-sample gradients of the per-sample loss with respect to the layer's output z,
    /// `batch`×`out_dim`.
    pub dy: Vec<f64>,
    /// ∇W = dyᵀ·[x | 1] / B, `out_dim`×`cols`: the gradient of the batch-mean loss.
    pub grad: Vec<f64>,
}

impl MlpLayer {
    /// Columns of `weight` and `grad`: `in_dim` + 1 with a bias, else `in_dim`.
    pub fn cols(&self) -> usize {
        self.in_dim + usize::from(self.bias)
    }
}

/// A deterministic 3-layer MLP batch for the Kronecker-factor tests: see [`mlp_fixture`].
#[derive(Clone, Debug, PartialEq)]
pub struct MlpFixture {
    /// Batch size B ([`MLP_BATCH`]).
    pub batch: usize,
    /// The network input, `batch`×13 (equal to `layers[0].x`).
    pub input: Vec<f64>,
    /// The regression target, `batch`×5.
    pub target: Vec<f64>,
    /// The layers, in forward order ([`MLP_LAYERS`]).
    pub layers: Vec<MlpLayer>,
    /// The batch-mean loss (1/2B)·Σ‖output − target‖².
    pub loss: f64,
}

/// Forward pass: returns the inputs of every layer followed by the network output.
/// Hidden layers apply tanh; the last is linear.
fn mlp_forward(batch: usize, weights: &[&[f64]], input: &[f64]) -> Vec<Vec<f64>> {
    let mut acts = vec![input.to_vec()];
    for (l, &(in_dim, out_dim, bias)) in MLP_LAYERS.iter().enumerate() {
        let (cols, xt) = with_bias(batch, in_dim, &acts[l], bias);
        let mut z = gemm(batch, cols, out_dim, &xt, weights[l], false, true);
        if l + 1 < MLP_LAYERS.len() {
            z.iter_mut().for_each(|v| *v = v.tanh());
        }
        acts.push(z);
    }
    acts
}

fn mlp_loss(batch: usize, output: &[f64], target: &[f64]) -> f64 {
    let sq: f64 = output
        .iter()
        .zip(target)
        .map(|(o, t)| (o - t) * (o - t))
        .sum();
    0.5 * sq / batch as f64
}

/// A deterministic 3-layer MLP (13→17 tanh, 17→9 tanh, both with bias; 9→5 linear without
/// bias) on a batch of [`MLP_BATCH`] = 32, with the loss (1/2B)·Σ_b ‖out_b − y_b‖². From one
/// SplitMix64 stream seeded by `seed` (Box–Muller normals): the input (N(0, 1)), the target
/// (N(0, 1)), then per layer W (N(0, 1/in)) and b (N(0, 0.01)). Each layer records its input
/// x, dy = ∂(½‖out_b − y_b‖²)/∂z_b per sample (exact backpropagation) and
/// ∇W = dyᵀ·[x | 1]/B, the gradient of the batch-mean loss.
pub fn mlp_fixture(seed: u64) -> MlpFixture {
    let batch = MLP_BATCH;
    let mut rng = SplitMix64::new(seed);
    let (in0, out_last) = (MLP_LAYERS[0].0, MLP_LAYERS[MLP_LAYERS.len() - 1].1);
    let input: Vec<f64> = (0..batch * in0).map(|_| rng.gaussian()).collect();
    let target: Vec<f64> = (0..batch * out_last).map(|_| rng.gaussian()).collect();
    let weights: Vec<Vec<f64>> = MLP_LAYERS
        .iter()
        .map(|&(in_dim, out_dim, bias)| {
            let cols = in_dim + usize::from(bias);
            let mut w = vec![0.0; out_dim * cols];
            for r in 0..out_dim {
                for c in 0..in_dim {
                    w[r * cols + c] = rng.gaussian() / (in_dim as f64).sqrt();
                }
            }
            if bias {
                (0..out_dim).for_each(|r| w[r * cols + in_dim] = 0.1 * rng.gaussian());
            }
            w
        })
        .collect();
    let wrefs: Vec<&[f64]> = weights.iter().map(Vec::as_slice).collect();
    let acts = mlp_forward(batch, &wrefs, &input);
    let output = &acts[MLP_LAYERS.len()];
    let loss = mlp_loss(batch, output, &target);
    // Backward: dy of the last layer is out − y; then dh = dz·W (weight part), dz = dh ⊙ (1 − h²).
    let mut dys = vec![Vec::new(); MLP_LAYERS.len()];
    let mut dz: Vec<f64> = output.iter().zip(&target).map(|(o, t)| o - t).collect();
    for l in (0..MLP_LAYERS.len()).rev() {
        let (in_dim, out_dim, bias) = MLP_LAYERS[l];
        dys[l] = dz.clone();
        if l == 0 {
            break;
        }
        let cols = in_dim + usize::from(bias);
        let mut dh = vec![0.0; batch * in_dim];
        for b in 0..batch {
            for c in 0..in_dim {
                dh[b * in_dim + c] = (0..out_dim)
                    .map(|r| dz[b * out_dim + r] * weights[l][r * cols + c])
                    .sum();
            }
        }
        let h = &acts[l];
        dz = dh.iter().zip(h).map(|(d, h)| d * (1.0 - h * h)).collect();
    }
    let layers = MLP_LAYERS
        .iter()
        .enumerate()
        .map(|(l, &(in_dim, out_dim, bias))| {
            let (cols, xt) = with_bias(batch, in_dim, &acts[l], bias);
            let mut grad = gemm(out_dim, batch, cols, &dys[l], &xt, true, false);
            grad.iter_mut().for_each(|v| *v /= batch as f64);
            MlpLayer {
                in_dim,
                out_dim,
                bias,
                weight: weights[l].clone(),
                x: acts[l].clone(),
                dy: dys[l].clone(),
                grad,
            }
        })
        .collect();
    MlpFixture {
        batch,
        input,
        target,
        layers,
        loss,
    }
}

/// MKOR's rank-1 statistic for one factor: each sample's `scale`·x entries are clamped to
/// ±[`MKOR_CLAMP`], then averaged over the batch, then (when `bias`) a 1 is appended: length
/// `dim` + bias. Use `scale` = 1 for the inputs ā and `scale` = B for the output gradients ḡ
/// (MKOR's `n·grad_out`). The clamp acts per sample before the mean, as the official code
/// (clamp in the hooks, mean in `low_rank_approx`) does.
pub fn mkor_means(batch: usize, dim: usize, x: &[f64], bias: bool, scale: f64) -> Vec<f64> {
    assert!(batch > 0, "mkor_means needs a non-empty batch");
    assert_eq!(x.len(), batch * dim, "x must be batch×dim");
    let mut m = vec![0.0; dim];
    for row in x.chunks_exact(dim.max(1)).take(batch) {
        for (m, v) in m.iter_mut().zip(row) {
            *m += (scale * v).clamp(-MKOR_CLAMP, MKOR_CLAMP);
        }
    }
    m.iter_mut().for_each(|v| *v /= batch as f64);
    if bias {
        m.push(1.0);
    }
    m
}

/// Sherman–Morrison, in place: J ← J − (J·v)(vᵀ·J) / (1 + vᵀ·J·v) for an n×n `j` (not assumed
/// symmetric: J·v and vᵀ·J are formed separately, as MKOR's `sm_inverse` does). If J = M⁻¹
/// the result is (M + v·vᵀ)⁻¹.
pub fn sherman_morrison(n: usize, j: &mut [f64], v: &[f64]) {
    assert_eq!(j.len(), n * n, "sherman_morrison: j must be n×n");
    assert_eq!(v.len(), n, "sherman_morrison: v must have n entries");
    let jv: Vec<f64> = (0..n)
        .map(|r| (0..n).map(|c| j[r * n + c] * v[c]).sum())
        .collect();
    let vj: Vec<f64> = (0..n)
        .map(|c| (0..n).map(|r| v[r] * j[r * n + c]).sum())
        .collect();
    let denom = 1.0 + v.iter().zip(&jv).map(|(v, x)| v * x).sum::<f64>();
    for r in 0..n {
        for c in 0..n {
            j[r * n + c] -= jv[r] * vj[c] / denom;
        }
    }
}

/// One MKOR inverse-factor refresh, in place on the n×n `j`: when `stabilise` (the flag the
/// previous refresh returned) first J ← 0.9·J + 0.1·I; then J ← 0.95·J + 0.05·I (hard-coded);
/// then [`sherman_morrison`] with `v`. Returns max|J_ij| > 2, the flag for the next refresh.
/// Start J at [`identity`] with the flag false.
pub fn mkor_refresh(n: usize, j: &mut [f64], v: &[f64], stabilise: bool) -> bool {
    assert_eq!(j.len(), n * n, "mkor_refresh: j must be n×n");
    if stabilise {
        j.iter_mut().for_each(|x| *x *= 0.9);
        add_identity(n, j, 0.1);
    }
    j.iter_mut().for_each(|x| *x *= FACTOR_DECAY);
    add_identity(n, j, 1.0 - FACTOR_DECAY);
    sherman_morrison(n, j, v);
    j.iter().any(|x| x.abs() > 2.0)
}

/// MKOR's step direction for one layer: v = G⁻¹·∇W·A⁻¹ (`out`×`cols`, from the inverse factors
/// J_G = `g_inv` and J_A = `a_inv`), rescaled by (‖g_W‖ + ‖g_b‖)/(‖v_W‖ + ‖v_b‖). With `bias`
/// the last column of ∇W (and of v) is the bias, and ‖·_W‖ (Frobenius, the other columns) and
/// ‖·_b‖ (2-norm, the last column) are taken separately and added, as MKOR's `_update_grad`
/// does; without it both are plain Frobenius norms. When the ratio is NaN (‖g‖ = ‖v‖ = 0) the
/// gradient is returned unchanged, as MKOR skips the layer.
pub fn mkor_step(
    out: usize,
    cols: usize,
    bias: bool,
    g_inv: &[f64],
    grad: &[f64],
    a_inv: &[f64],
) -> Vec<f64> {
    assert!(!bias || cols > 0, "a bias needs at least one column");
    let v = precondition_inverse(out, cols, g_inv, grad, a_inv);
    let split_norm = |m: &[f64]| {
        if !bias {
            return frobenius(m);
        }
        let (mut w, mut b) = (0.0, 0.0);
        for row in m.chunks_exact(cols) {
            w += row[..cols - 1].iter().map(|x| x * x).sum::<f64>();
            b += row[cols - 1] * row[cols - 1];
        }
        w.sqrt() + b.sqrt()
    };
    let ratio = split_norm(grad) / split_norm(&v);
    if ratio.is_nan() {
        return grad.to_vec();
    }
    v.iter().map(|x| x * ratio).collect()
}

/// The J that [`mkor_refresh`] (never stabilising) should hold after refreshing J = I with each
/// of `vs` in turn, computed without Sherman–Morrison: J = X⁻¹ for the factor X tracked
/// explicitly as X ← (0.95·X⁻¹ + 0.05·I)⁻¹ + v·vᵀ from X = I, every inverse by
/// [`spd_inverse`]. Panics if a matrix stops being numerically SPD.
pub fn mkor_factor_after(n: usize, vs: &[Vec<f64>]) -> Vec<f64> {
    let mut x = identity(n);
    for v in vs {
        assert_eq!(v.len(), n, "mkor_factor_after: every v needs n entries");
        let mut blended = spd_inverse(n, &x).expect("X is SPD");
        blended.iter_mut().for_each(|e| *e *= FACTOR_DECAY);
        add_identity(n, &mut blended, 1.0 - FACTOR_DECAY);
        x = spd_inverse(n, &blended).expect("the blend is SPD");
        for r in 0..n {
            for c in 0..n {
                x[r * n + c] += v[r] * v[c];
            }
        }
    }
    spd_inverse(n, &x).expect("X is SPD")
}

/// M-FAC's dynamic algorithm (IST-DASLab `optim.py`, `HInvFastUpMulti`, its PyTorch path) for
/// products with the inverse of F̂ = damp·I + (1/m)·Σ_i g_i·g_iᵀ over a ring buffer of the
/// last m gradients. λ = 1/damp. All matrices row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MfacRef {
    /// Gradient length d.
    pub d: usize,
    /// Window size m.
    pub m: usize,
    /// The damping (F̂ = damp·I + …).
    pub damp: f64,
    /// The ring buffer G, m×d; rows not yet written are 0.
    pub grads: Vec<f64>,
    /// G·Gᵀ, m×m.
    pub gram: Vec<f64>,
    /// The row the next [`push`](Self::push) replaces (the official `last`).
    pub next: usize,
    /// Gradients pushed so far, saturating at m.
    pub count: usize,
    /// D (`giHig`), m×m upper-triangular, from [`setup`](Self::setup).
    pub dmat: Vec<f64>,
    /// denom = m + diag(D), length m.
    pub denom: Vec<f64>,
    /// B (`coef`), m×m lower-triangular with λ on the diagonal.
    pub coef: Vec<f64>,
}

impl MfacRef {
    /// An empty window (G = 0), set up as the official constructor does.
    pub fn new(d: usize, m: usize, damp: f64) -> Self {
        assert!(m > 0 && damp > 0.0, "M-FAC needs m > 0 and damp > 0");
        let mut s = Self {
            d,
            m,
            damp,
            grads: vec![0.0; m * d],
            gram: vec![0.0; m * m],
            next: 0,
            count: 0,
            dmat: vec![0.0; m * m],
            denom: vec![0.0; m],
            coef: vec![0.0; m * m],
        };
        s.setup();
        s
    }

    /// λ = 1/damp.
    pub fn lambda(&self) -> f64 {
        1.0 / self.damp
    }

    /// Replaces the oldest row (`next`) of G with `g` and that row and column of G·Gᵀ with
    /// G·g (O(dm)), then advances `next`. Does not call [`setup`](Self::setup).
    pub fn push(&mut self, g: &[f64]) {
        let (d, m) = (self.d, self.m);
        assert_eq!(g.len(), d, "MfacRef::push: g must have d entries");
        let at = self.next;
        self.grads[at * d..(at + 1) * d].copy_from_slice(g);
        for i in 0..m {
            let dot: f64 = self.grads[i * d..(i + 1) * d]
                .iter()
                .zip(g)
                .map(|(a, b)| a * b)
                .sum();
            self.gram[at * m + i] = dot;
            self.gram[i * m + at] = dot;
        }
        self.next = (at + 1) % m;
        self.count = (self.count + 1).min(m);
    }

    /// Recomputes D, denom and B from G·Gᵀ (O(m³)): D = triu(LU_nopivot(λ·GGᵀ + m·I) − m·I)
    /// (Doolittle, unit-lower L, so D is U with m taken off its diagonal), denom = m + diag(D),
    /// and B = λ·I with row i (i ≥ 1) below the diagonal B[i, :i] = T[i, :i]·B[:i, :i] where
    /// T = −Dᵀ ⊘ denom (column j divided by denom_j). The official code recomputes only the
    /// rows from the replaced one on; the rows before it come out identical, so all are
    /// recomputed here.
    pub fn setup(&mut self) {
        let m = self.m;
        let lambda = self.lambda();
        let mf = m as f64;
        let mut lu: Vec<f64> = self.gram.iter().map(|v| lambda * v).collect();
        add_identity(m, &mut lu, mf);
        for k in 0..m {
            let pivot = lu[k * m + k];
            for i in k + 1..m {
                let f = lu[i * m + k] / pivot;
                lu[i * m + k] = f;
                for j in k + 1..m {
                    lu[i * m + j] -= f * lu[k * m + j];
                }
            }
        }
        self.dmat = vec![0.0; m * m];
        for i in 0..m {
            for j in i..m {
                self.dmat[i * m + j] = lu[i * m + j] - if i == j { mf } else { 0.0 };
            }
        }
        self.denom = (0..m).map(|i| mf + self.dmat[i * m + i]).collect();
        let tmp = |i: usize, j: usize| -self.dmat[j * m + i] / self.denom[j];
        let mut coef = identity(m);
        coef.iter_mut().for_each(|v| *v *= lambda);
        for i in 1..m {
            for j in 0..i {
                coef[i * m + j] = (j..i).map(|k| tmp(i, k) * coef[k * m + j]).sum();
            }
        }
        self.coef = coef;
    }

    /// The official `update`: [`push`](Self::push) then [`setup`](Self::setup).
    pub fn update(&mut self, g: &[f64]) {
        self.push(g);
        self.setup();
    }

    /// F̂⁻¹·x as the official `mul`: c = λ·G·x; for i = 1..m, c[i..] −= D[i−1, i..]·c[i−1]/denom[i−1];
    /// result = λ·x − Gᵀ·((c ⊘ denom)·B) (a row vector times B).
    pub fn ihvp(&self, x: &[f64]) -> Vec<f64> {
        let (d, m) = (self.d, self.m);
        assert_eq!(x.len(), d, "MfacRef::ihvp: x must have d entries");
        let lambda = self.lambda();
        let mut c: Vec<f64> = (0..m)
            .map(|i| {
                let row = &self.grads[i * d..(i + 1) * d];
                lambda * row.iter().zip(x).map(|(g, x)| g * x).sum::<f64>()
            })
            .collect();
        for i in 1..m {
            let s = c[i - 1] / self.denom[i - 1];
            let row = &self.dmat[(i - 1) * m + i..i * m];
            c[i..].iter_mut().zip(row).for_each(|(c, d)| *c -= d * s);
        }
        let w: Vec<f64> = (0..m)
            .map(|j| {
                (0..m)
                    .map(|i| c[i] / self.denom[i] * self.coef[i * m + j])
                    .sum()
            })
            .collect();
        let mut out: Vec<f64> = x.iter().map(|x| lambda * x).collect();
        for (j, wj) in w.iter().enumerate() {
            let row = &self.grads[j * d..(j + 1) * d];
            out.iter_mut().zip(row).for_each(|(o, g)| *o -= wj * g);
        }
        out
    }

    /// The official `update_mul` (what the M-FAC optimiser steps with): [`update`](Self::update)
    /// with `g`, then F̂⁻¹·g.
    pub fn update_mul(&mut self, g: &[f64]) -> Vec<f64> {
        self.update(g);
        self.ihvp(g)
    }
}

/// The official naive Woodbury reference (`HInvSlow`): H = I/damp, then for each gradient g
/// (the rows of `grads`, k×d with k ≤ m) H ← H − (H·g)(H·g)ᵀ / (m + gᵀ·H·g). Returns H (d×d),
/// which equals (damp·I + (1/m)·Σ g·gᵀ)⁻¹.
pub fn woodbury_naive(d: usize, m: usize, damp: f64, grads: &[f64]) -> Vec<f64> {
    assert!(
        d > 0 && grads.len().is_multiple_of(d) && grads.len() / d <= m,
        "woodbury_naive: grads must be k×d with k ≤ m"
    );
    let mut h = identity(d);
    h.iter_mut().for_each(|v| *v /= damp);
    for g in grads.chunks_exact(d) {
        let hg: Vec<f64> = h
            .chunks_exact(d)
            .map(|row| row.iter().zip(g).map(|(a, b)| a * b).sum())
            .collect();
        let denom = m as f64 + g.iter().zip(&hg).map(|(a, b)| a * b).sum::<f64>();
        for r in 0..d {
            let s = hg[r] / denom;
            h[r * d..(r + 1) * d]
                .iter_mut()
                .zip(&hg)
                .for_each(|(h, x)| *h -= s * x);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::super::krylov::random_spd;
    use super::super::linalg::{max_abs_diff, symmetric_eigen, transpose};
    use super::*;

    fn gaussians(n: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        (0..n).map(|_| rng.gaussian()).collect()
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let diff: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
        frobenius(&diff) / frobenius(b)
    }

    fn spd(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
        let l: Vec<f64> = (0..n)
            .map(|i| lo * (hi / lo).powf(i as f64 / (n.max(2) - 1) as f64))
            .collect();
        random_spd(n, &l, seed)
    }

    #[test]
    fn factors_are_scaled_second_moments_with_the_bias_corner() {
        // x = [[1, 2], [3, 4]], B = 2.
        let x = [1.0, 2.0, 3.0, 4.0];
        let a = factor_a(2, 2, &x, true);
        // [x | 1]ᵀ[x | 1] / 2 = [[10, 14, 4], [14, 20, 6], [4, 6, 2]] / 2.
        assert_eq!(a, [5.0, 7.0, 2.0, 7.0, 10.0, 3.0, 2.0, 3.0, 1.0]);
        assert_eq!(factor_a(2, 2, &x, false), [5.0, 7.0, 7.0, 10.0]);
        assert_eq!(factor_g(2, 2, &x), [5.0, 7.0, 7.0, 10.0]);
        assert_eq!(factor_g(2, 1, &[3.0, -1.0]), [5.0]);
    }

    #[test]
    fn running_averages_follow_kaisa_and_kfac_jax() {
        let f1 = [2.0, 1.0, 1.0, 4.0];
        let f2 = [6.0, -1.0, -1.0, 2.0];
        // KAISA: from I, 0.95·I + 0.05·F1.
        let mut k = identity(2);
        kaisa_average(&mut k, &f1, FACTOR_DECAY);
        assert!(max_abs_diff(&k, &[1.05, 0.05, 0.05, 1.15]) < 1e-15);
        // kfac-jax: the first update takes F1 whatever F held; the second weighs
        // (0.95·F1 + F2)/1.95.
        let mut avg = KfacJaxAverage::default();
        let mut f = identity(2);
        avg.update(&mut f, &f1);
        assert_eq!((avg.weight, f.as_slice()), (1.0, f1.as_slice()));
        avg.update(&mut f, &f2);
        let expect: Vec<f64> = f1
            .iter()
            .zip(&f2)
            .map(|(a, b)| (0.95 * a + b) / 1.95)
            .collect();
        assert!((avg.weight - 1.95).abs() < 1e-15);
        assert!(max_abs_diff(&f, &expect) < 1e-14);
        // A constant stream stays put (bias corrected), and w → 1/(1 − 0.95) = 20.
        let mut avg = KfacJaxAverage::new(0.95);
        let mut f = vec![0.0; 4];
        for _ in 0..1000 {
            avg.update(&mut f, &f2);
        }
        assert!(max_abs_diff(&f, &f2) < 1e-13);
        assert!((avg.weight - 20.0).abs() < 1e-9);
    }

    #[test]
    fn pi_damping_is_the_kronecker_pi_correction() {
        let (na, ng, lambda) = (5, 3, 1e-2);
        let a = spd(na, 0.1, 30.0, 1);
        let g = spd(ng, 1e-3, 0.2, 2);
        let (ap, gp) = pi_damped(na, &a, ng, &g, lambda);
        let (ca, cg) = (trace(na, &a) / na as f64, trace(ng, &g) / ng as f64);
        let c = (ca * cg).sqrt();
        // Both damped factors have mean diagonal c + √λ.
        assert!((trace(na, &ap) / na as f64 - (c + lambda.sqrt())).abs() < 1e-13);
        assert!((trace(ng, &gp) / ng as f64 - (c + lambda.sqrt())).abs() < 1e-13);
        // A′⊗G′ = (A + π√λ·I)⊗(G + √λ/π·I), π = √(c_A/c_G): same preconditioned gradient.
        let pi = (ca / cg).sqrt();
        let grad = gaussians(ng * na, 3);
        let via_pi = precondition_inverse(
            ng,
            na,
            &spd_inverse(ng, &tikhonov(ng, &g, lambda.sqrt() / pi)).unwrap(),
            &grad,
            &spd_inverse(na, &tikhonov(na, &a, pi * lambda.sqrt())).unwrap(),
        );
        let ours = precondition_inverse(
            ng,
            na,
            &spd_inverse(ng, &gp).unwrap(),
            &grad,
            &spd_inverse(na, &ap).unwrap(),
        );
        assert!(rel(&ours, &via_pi) < 1e-12);
        // A zero factor gives √λ·I for both.
        let (ap, gp) = pi_damped(2, &[0.0; 4], ng, &g, 4.0);
        assert_eq!(ap, [2.0, 0.0, 0.0, 2.0]);
        assert_eq!(gp, tikhonov(ng, &[0.0; 9], 2.0));
    }

    #[test]
    fn inverse_and_eigen_paths_solve_their_kronecker_systems() {
        let (out, cols, gamma) = (4, 6, KAISA_DAMPING);
        let g = spd(out, 1e-2, 3.0, 5);
        let a = spd(cols, 1e-3, 10.0, 6);
        let grad = gaussians(out * cols, 7);
        // Inverse path: G·P·A = ∇W.
        let p = precondition_inverse(
            out,
            cols,
            &spd_inverse(out, &g).unwrap(),
            &grad,
            &spd_inverse(cols, &a).unwrap(),
        );
        let back = gemm(
            out,
            cols,
            cols,
            &gemm(out, out, cols, &g, &p, false, false),
            &a,
            false,
            false,
        );
        assert!(rel(&back, &grad) < 1e-10);
        // Eigen path: G·P·A + γ·P = ∇W, and with γ = 0 it is the inverse path.
        let (dg, qg) = symmetric_eigen(out, &g);
        let (da, qa) = symmetric_eigen(cols, &a);
        let pe = precondition_eigen(out, cols, &qg, &dg, &qa, &da, &grad, gamma);
        let gpa = gemm(
            out,
            cols,
            cols,
            &gemm(out, out, cols, &g, &pe, false, false),
            &a,
            false,
            false,
        );
        let lhs: Vec<f64> = gpa.iter().zip(&pe).map(|(x, p)| x + gamma * p).collect();
        assert!(rel(&lhs, &grad) < 1e-10);
        let pe0 = precondition_eigen(out, cols, &qg, &dg, &qa, &da, &grad, 0.0);
        assert!(rel(&pe0, &p) < 1e-9);
        // Negative eigenvalues are clamped to 0 first.
        let mut dneg = da.clone();
        dneg[0] = -5.0;
        let mut dzero = da.clone();
        dzero[0] = 0.0;
        assert_eq!(
            precondition_eigen(out, cols, &qg, &dg, &qa, &dneg, &grad, gamma),
            precondition_eigen(out, cols, &qg, &dg, &qa, &dzero, &grad, gamma)
        );
        // 1×1: q_g·[q_g·∇W·q_a / (d_g·d_a + γ)]·q_a = 7/(2·3 + 1) with both signs cancelling.
        let one = precondition_eigen(1, 1, &[1.0], &[2.0], &[-1.0], &[3.0], &[7.0], 1.0);
        assert!((one[0] - 1.0).abs() < 1e-15);
    }

    #[test]
    fn kl_clip_scales_by_the_summed_inner_products() {
        let (v1, g1) = ([1.0, 2.0], [3.0, 4.0]); // ⟨v, g⟩ = 11
        let (v2, g2) = ([1.0], [-2.0]); // −2
        let nu = kl_clip_scale(0.1, &[(&v1, &g1), (&v2, &g2)], 1e-3);
        assert!((nu - (1e-3f64 / (0.01 * 9.0)).sqrt()).abs() < 1e-15);
        // Negative sums use |·|; small ones and zero give 1.
        let nu = kl_clip_scale(1.0, &[(&v2, &g2)], 1e-3);
        assert!((nu - (1e-3f64 / 2.0).sqrt()).abs() < 1e-15);
        assert_eq!(kl_clip_scale(1e-3, &[(&v1, &g1)], 1e-3), 1.0);
        assert_eq!(kl_clip_scale(0.1, &[(&[0.0], &[1.0])], 1e-3), 1.0);
    }

    #[test]
    fn mlp_fixture_is_deterministic_and_its_gradients_are_exact() {
        let fx = mlp_fixture(42);
        assert_eq!(fx, mlp_fixture(42));
        assert_ne!(fx.input, mlp_fixture(43).input);
        assert_eq!(fx.layers.len(), 3);
        assert_eq!(fx.input, fx.layers[0].x);
        for (layer, &(i, o, b)) in fx.layers.iter().zip(&MLP_LAYERS) {
            assert_eq!((layer.in_dim, layer.out_dim, layer.bias), (i, o, b));
            let cols = layer.cols();
            assert_eq!(layer.x.len(), fx.batch * i);
            assert_eq!(layer.dy.len(), fx.batch * o);
            assert_eq!(layer.grad.len(), o * cols);
            assert_eq!(layer.weight.len(), o * cols);
            assert_eq!(factor_a(fx.batch, i, &layer.x, b).len(), cols * cols);
        }
        // Central differences of the loss agree with ∇W (weights and biases).
        let h = 1e-6;
        for (l, layer) in fx.layers.iter().enumerate() {
            let cols = layer.cols();
            for (r, c) in [(0, 0), (layer.out_dim - 1, cols - 1), (1, cols / 2)] {
                let loss_with = |delta: f64| {
                    let mut ws: Vec<Vec<f64>> =
                        fx.layers.iter().map(|l| l.weight.clone()).collect();
                    ws[l][r * cols + c] += delta;
                    let refs: Vec<&[f64]> = ws.iter().map(Vec::as_slice).collect();
                    let acts = mlp_forward(fx.batch, &refs, &fx.input);
                    mlp_loss(fx.batch, &acts[3], &fx.target)
                };
                assert!((loss_with(0.0) - fx.loss).abs() < 1e-15);
                let fd = (loss_with(h) - loss_with(-h)) / (2.0 * h);
                let an = layer.grad[r * cols + c];
                assert!(
                    (fd - an).abs() <= 1e-7 * (1.0 + an.abs()),
                    "layer {l} ({r}, {c}): fd {fd} vs {an}"
                );
            }
        }
    }

    #[test]
    fn mkor_means_clamp_each_sample_then_average() {
        // Sample entries 300 → 100 before the mean: (100 − 50)/2 = 25.
        let x = [1.0, 300.0, 3.0, -50.0];
        assert_eq!(mkor_means(2, 2, &x, true, 1.0), [2.0, 25.0, 1.0]);
        // scale = B = 2: [[2, 600 → 100], [6, −100]].
        assert_eq!(mkor_means(2, 2, &x, false, 2.0), [4.0, 0.0]);
    }

    #[test]
    fn sherman_morrison_inverts_a_rank_one_update_of_a_nonsymmetric_matrix() {
        let n = 6;
        let mut j = identity(n);
        for (e, r) in j.iter_mut().zip(gaussians(n * n, 8)) {
            *e += 0.1 * r;
        }
        let v = gaussians(n, 9);
        let mut j2 = j.clone();
        sherman_morrison(n, &mut j2, &v);
        // J′ = (J⁻¹ + v·vᵀ)⁻¹ ⇔ J′ + (J·v)(vᵀ·J′) = J.
        let jv = gemm(n, n, 1, &j, &v, false, false);
        let vj2 = gemm(1, n, n, &v, &j2, false, false);
        let lhs: Vec<f64> = j2
            .iter()
            .enumerate()
            .map(|(k, x)| x + jv[k / n] * vj2[k % n])
            .collect();
        assert!(max_abs_diff(&lhs, &j) < 1e-13);
        assert_ne!(j, transpose(n, n, &j), "the test matrix is not symmetric");
    }

    #[test]
    fn a_hundred_mkor_refreshes_match_the_explicit_inverse() {
        let n = 12;
        let vs: Vec<Vec<f64>> = (0..100)
            .map(|k| {
                let s = if k % 7 == 0 { 3.0 } else { 0.5 };
                gaussians(n, 1000 + k).iter().map(|x| s * x).collect()
            })
            .collect();
        let mut j = identity(n);
        let mut flag = false;
        for v in &vs {
            flag = mkor_refresh(n, &mut j, v, flag);
            // J ≼ I stays true from J = I, so the stabiliser never fires.
            assert!(!flag);
        }
        let expect = mkor_factor_after(n, &vs);
        let err = max_abs_diff(&j, &expect) / expect.iter().fold(0.0f64, |m, x| m.max(x.abs()));
        assert!(err < 1e-9, "relative error {err}");
        // The stabilised path: J = 3·I, v = 0 → 0.95·(0.9·3 + 0.1) + 0.05 = 2.71 → flag.
        let mut j = identity(2);
        j.iter_mut().for_each(|x| *x *= 3.0);
        assert!(mkor_refresh(2, &mut j, &[0.0, 0.0], true));
        assert!(max_abs_diff(&j, &[2.71, 0.0, 0.0, 2.71]) < 1e-14);
        // Without stabilising: 0.95·3 + 0.05 = 2.9, then SM with v = (1, 0): 2.9/(1 + 2.9).
        let mut j = identity(2);
        j.iter_mut().for_each(|x| *x *= 3.0);
        assert!(mkor_refresh(2, &mut j, &[1.0, 0.0], false));
        assert!(max_abs_diff(&j, &[2.9 / 3.9, 0.0, 0.0, 2.9]) < 1e-15);
    }

    #[test]
    fn mkor_step_keeps_the_split_gradient_norm() {
        let (out, cols) = (3, 5);
        let gi = spd(out, 0.5, 4.0, 10);
        let ai = spd(cols, 0.2, 2.0, 11);
        let grad = gaussians(out * cols, 12);
        let dir = precondition_inverse(out, cols, &gi, &grad, &ai);
        let split = |m: &[f64]| {
            let w: f64 = m
                .chunks_exact(cols)
                .flat_map(|r| &r[..cols - 1])
                .map(|x| x * x)
                .sum();
            let b: f64 = m
                .chunks_exact(cols)
                .map(|r| r[cols - 1] * r[cols - 1])
                .sum();
            w.sqrt() + b.sqrt()
        };
        let step = mkor_step(out, cols, true, &gi, &grad, &ai);
        assert!((split(&step) - split(&grad)).abs() < 1e-13);
        let ratio = step[0] / dir[0];
        assert!(step
            .iter()
            .zip(&dir)
            .all(|(s, d)| (s - ratio * d).abs() < 1e-13));
        let step = mkor_step(out, cols, false, &gi, &grad, &ai);
        assert!((frobenius(&step) - frobenius(&grad)).abs() < 1e-13);
        assert_eq!(mkor_step(out, cols, true, &gi, &[0.0; 15], &ai), [0.0; 15]);
    }

    #[test]
    fn mfac_matches_woodbury_at_the_official_self_test_size() {
        let (d, m) = (1000, 32);
        let grads = gaussians(m * d, 20);
        let x = gaussians(d, 21);
        let mut mfac = MfacRef::new(d, m, MFAC_DAMP);
        for g in grads.chunks_exact(d) {
            mfac.update(g);
        }
        assert_eq!((mfac.next, mfac.count), (0, m));
        let h = woodbury_naive(d, m, MFAC_DAMP, &grads);
        let expect = gemm(d, d, 1, &h, &x, false, false);
        let err = rel(&mfac.ihvp(&x), &expect);
        assert!(err < 1e-9, "relative error {err}");
        // B is lower-triangular with λ on the diagonal.
        for i in 0..m {
            assert_eq!(mfac.coef[i * m + i], mfac.lambda());
            assert!((i + 1..m).all(|j| mfac.coef[i * m + j] == 0.0));
        }
    }

    #[test]
    fn mfac_ring_buffer_wraps_and_partial_windows_work() {
        let (d, m, damp) = (60, 8, 0.1);
        let grads = gaussians(13 * d, 30);
        let x = gaussians(d, 31);
        let mut mfac = MfacRef::new(d, m, damp);
        // Empty window: F̂ = damp·I.
        let empty = mfac.ihvp(&x);
        assert!(max_abs_diff(&empty, &x.iter().map(|x| x / damp).collect::<Vec<_>>()) < 1e-12);
        for (k, g) in grads.chunks_exact(d).enumerate() {
            let y = mfac.update_mul(g);
            assert_eq!(y, mfac.ihvp(g));
            if k == 2 {
                // Three gradients in a window of eight.
                let h = woodbury_naive(d, m, damp, &grads[..3 * d]);
                assert!(rel(&mfac.ihvp(&x), &gemm(d, d, 1, &h, &x, false, false)) < 1e-11);
            }
        }
        assert_eq!((mfac.next, mfac.count), (13 % m, m));
        let h = woodbury_naive(d, m, damp, &grads[5 * d..]);
        let y = mfac.ihvp(&x);
        assert!(rel(&y, &gemm(d, d, 1, &h, &x, false, false)) < 1e-11);
        // And F̂·y = x with F̂ = damp·I + (1/m)·Σ g·gᵀ over the last m gradients.
        let mut fy: Vec<f64> = y.iter().map(|y| damp * y).collect();
        for g in grads[5 * d..].chunks_exact(d) {
            let gy: f64 = g.iter().zip(&y).map(|(a, b)| a * b).sum();
            fy.iter_mut()
                .zip(g)
                .for_each(|(f, g)| *f += gy * g / m as f64);
        }
        assert!(rel(&fy, &x) < 1e-11);
    }
}
