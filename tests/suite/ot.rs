//! Optimal transport against the f64 log-domain Sinkhorn of `reference::ot` (POT's
//! `sinkhorn_log`, written independently of the shaders).
//!
//! Tolerances. The GPU holds the potentials in f32 and forms each exponent
//! z = (f[i] + g[j] − C[i][j])/reg from cost-unit values within [−1, 1] (costs scaled to
//! [0, 1]): its rounding is ≤ u·|f + g − C|/reg, and the updates that produced f and g carry
//! the same kind of error from their own exponents, (|g − C| + |f − C|)/reg·u, so P's entries
//! are within ≈ 5u/reg relative (u = 2⁻²⁴: 3.6e-4 at η = 1200, 6e-6 at η = 20), plus the
//! log-sum-exp's summation, a chain of at most L = n/8 + m/8 + 16 additions (both passes run
//! along rows, of Cᵀ for g and of C for f, one invocation taking every 8th entry of its row in
//! runs of 4, then a tree), ≤ L·u. Sinkhorn's contraction
//! keeps these from compounding over iterations. The tests allow twice that,
//! 10u/reg + 2L·u, on P's entries above 1e-6 of the largest (smaller ones are below f32's
//! resolution of their row's sum), and ⟨C, P⟩ to 1e-4 relative (an average of those errors).

use crate::common::{as_f32, as_f64, assert_empty, assert_param, gpu, gpu_without_simd_groups};
use curvgpu::ot::{
    Cost, Masses, Metric, NewtonStage, OtProblem, SinkhornConfig, SinkhornSolver, SnsConfig,
    MAX_TOP_K,
};
use curvgpu::reference::ot as r;
use curvgpu::{Error, Gpu, GpuVec};

const U: f64 = 5.960_464_477_539_063e-8;

/// The bound of the header on P's entries for an n×m problem at `reg`.
fn p_rtol(reg: f64, n: usize, m: usize) -> f64 {
    U * (10.0 / reg + 2.0 * (n / 8 + m / 8 + 16) as f64)
}

/// f32-representable inputs: what the GPU sees is exactly what the reference solves.
fn exact(v: Vec<f64>) -> Vec<f64> {
    as_f64(&as_f32(&v))
}

/// Positive weights (uniform in [0.1, 1.1], normalised), rounded to f32.
fn histogram(n: usize, seed: u64) -> Vec<f64> {
    exact(r::normalized(
        r::random_points(n, 1, seed)
            .iter()
            .map(|v| v + 0.1)
            .collect(),
    ))
}

/// Where a problem's inputs live on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placement {
    /// Each in its own buffer.
    Separate,
    /// All of them (a, b, the dense cost, the points) as disjoint views of one buffer at the
    /// aligned offsets `Layout` gives (`GpuVec::packed`: an engine's arena).
    Packed,
}

/// `parts` on the device, placed as asked.
fn place(gpu: &Gpu, placement: Placement, parts: &[&[f64]]) -> Vec<GpuVec<f32>> {
    if placement == Placement::Separate {
        return parts
            .iter()
            .map(|p| GpuVec::upload(gpu, &as_f32(p)).unwrap())
            .collect();
    }
    let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
    let views = GpuVec::<f32>::packed(gpu, &lens).unwrap();
    for (v, p) in views.iter().zip(parts) {
        v.write(&as_f32(p)).unwrap();
    }
    assert!(views.windows(2).all(|w| w[0].buffer() == w[1].buffer()));
    views
}

/// The inputs as uploaded, and the points (if any) after them.
struct Uploaded {
    a: GpuVec<f32>,
    b: GpuVec<f32>,
    c: GpuVec<f32>,
    points: Vec<GpuVec<f32>>,
    /// What was uploaded, in the order a, b, c, points.
    host: Vec<Vec<f32>>,
}

fn upload(gpu: &Gpu, a: &[f64], b: &[f64], c: &[f64]) -> Uploaded {
    upload_placed(gpu, Placement::Separate, a, b, c, &[])
}

fn upload_placed(
    gpu: &Gpu,
    placement: Placement,
    a: &[f64],
    b: &[f64],
    c: &[f64],
    points: &[&[f64]],
) -> Uploaded {
    let parts: Vec<&[f64]> = [a, b, c]
        .into_iter()
        .chain(points.iter().copied())
        .collect();
    let mut placed = place(gpu, placement, &parts);
    let points = placed.split_off(3);
    let [a, b, c]: [GpuVec<f32>; 3] = placed.try_into().unwrap();
    Uploaded {
        a,
        b,
        c,
        points,
        host: parts.iter().map(|p| as_f32(p)).collect(),
    }
}

/// A raw non-negative cost scaled to [0, 1] by an f32 factor: (the f32-exact scaled cost, the
/// factor), so the dense and the on-the-fly forms see the same numbers.
fn unit_scaled(raw: &[f64]) -> (Vec<f64>, f64) {
    let max = raw.iter().cloned().fold(0.0, f64::max);
    let scale = max.recip() as f32 as f64;
    (exact(raw.iter().map(|v| v * scale).collect()), scale)
}

impl Uploaded {
    /// The cost both ways: the uploaded dense matrix, and on the fly from points x and y
    /// (2-D) with `metric` and `scale`.
    fn both_forms<'a>(
        &'a self,
        x: &'a GpuVec<f32>,
        y: &'a GpuVec<f32>,
        metric: Metric,
        scale: f64,
    ) -> [(&'static str, Cost<'a>); 2] {
        let points = Cost::Points {
            x: x.view(),
            y: y.view(),
            dim: 2,
            metric,
            scale: scale as f32,
        };
        [
            ("dense", Cost::Dense(self.c.view())),
            ("on the fly", points),
        ]
    }

    /// Asserts that every input still holds what was uploaded: OT only reads the caller's
    /// views (it writes buffers of its own).
    #[track_caller]
    fn assert_unchanged(&self) {
        let on_device = [&self.a, &self.b, &self.c].into_iter().chain(&self.points);
        for (k, (v, want)) in on_device.zip(&self.host).enumerate() {
            assert_eq!(&v.read().unwrap(), want, "input {k} was written");
        }
    }

    /// The problem on the dense cost, histograms renormalised.
    fn dense(&self, gpu: &'static Gpu) -> OtProblem<'_> {
        OtProblem::new(
            gpu,
            &self.a,
            &self.b,
            Cost::Dense(self.c.view()),
            Masses::Renormalize,
        )
        .unwrap()
    }
}

/// A random problem, f32-exact: points uniform in [0, 1]² (seeds `[x, y, a, b]`; equal x and
/// y seeds at n = m give the same cloud twice), the squared-Euclidean cost scaled to [0, 1],
/// positive histograms.
struct Random {
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
}

fn random(n: usize, m: usize, seeds: [u64; 4]) -> Random {
    let x = exact(r::random_points(n, 2, seeds[0]));
    let y = exact(r::random_points(m, 2, seeds[1]));
    Random {
        a: histogram(n, seeds[2]),
        b: histogram(m, seeds[3]),
        c: exact(r::scaled_to_unit_max(r::sq_euclidean_cost(&x, &y, 2))),
    }
}

/// P from the GPU's potentials against P from the reference's, entrywise relative.
#[track_caller]
fn assert_plans_agree(
    what: &str,
    c: &[f64],
    got: (&[f32], &[f32]),
    want: (&[f64], &[f64]),
    reg: f64,
    rtol: f64,
) {
    let p = r::plan(c, &as_f64(got.0), &as_f64(got.1), reg);
    let q = r::plan(c, want.0, want.1, reg);
    let top = q.iter().cloned().fold(0.0, f64::max);
    let mut worst = 0.0f64;
    for (e, (x, y)) in p.iter().zip(&q).enumerate() {
        if *y > 1e-6 * top {
            let rel = (x - y).abs() / y;
            assert!(
                rel <= rtol,
                "{what}: P[{e}] = {x:e}, f64 {y:e}, relative {rel:e} > {rtol:e}"
            );
            worst = worst.max(rel);
        }
    }
    println!("{what}: worst relative P error {worst:.2e} (bound {rtol:.1e})");
}

/// The GPU's potentials (and ⟨C, P⟩) against the reference run: P's entries within `rtol`
/// relative, the transport cost within 1e-4.
#[track_caller]
fn assert_matches_pot(
    what: &str,
    c: &[f64],
    got: (&GpuVec<f32>, &GpuVec<f32>, f64),
    want: &r::SinkhornLog,
    reg: f64,
    rtol: f64,
) {
    let (f, g) = (got.0.read().unwrap(), got.1.read().unwrap());
    assert_plans_agree(what, c, (&f, &g), (&want.f, &want.g), reg, rtol);
    let cost = r::transport_cost(c, &want.f, &want.g, reg);
    assert_relative(what, got.2, cost, 1e-4);
}

#[track_caller]
fn assert_relative(what: &str, got: f64, want: f64, rtol: f64) {
    let rel = (got - want).abs() / want.abs();
    assert!(
        rel <= rtol,
        "{what}: {got} vs f64 {want}: relative {rel:e} > {rtol:e}"
    );
}

#[test]
fn sinkhorn_converges_as_pot_on_awkward_sizes_at_eta_20() {
    awkward_sizes_at_eta_20(Placement::Separate);
}

#[test]
fn sinkhorn_on_awkward_sizes_with_a_b_and_the_cost_packed_in_one_buffer() {
    awkward_sizes_at_eta_20(Placement::Packed);
}

fn awkward_sizes_at_eta_20(placement: Placement) {
    let reg = 0.05;
    // m a multiple of 4 takes the vec4 kernels (row_update4, col_partial4): n off their
    // blocks of 4 rows (1, 5, 257), m/4 off their blocks of 4 quadruples (1, 3, 65, 1025),
    // and 4100 columns for two column blocks of 256 invocations.
    let scalar = [(1, 7), (7, 1), (2, 3), (257, 131), (131, 257)];
    let vec4 = [(1, 4), (5, 12), (257, 260), (3, 4100)];
    // On a CPU adapter's tuning (blocks of 4) and on a GPU's (one row per workgroup).
    let devices = [("", gpu()), (", GPU tuning", gpu_without_simd_groups())];
    for ((n, m), (tuning, gpu)) in scalar
        .into_iter()
        .chain(vec4)
        .flat_map(|size| devices.map(|d| (size, d)))
    {
        let Random { a, b, c } = random(n, m, [10 + n as u64, 20 + m as u64, 1, 2]);
        let want = r::sinkhorn_log(&a, &b, &c, reg, 1000, 1e-6, 10);
        assert!(want.converged);
        let g = upload_placed(gpu, placement, &a, &b, &c, &[]);
        let problem = g.dense(gpu);
        let config = SinkhornConfig {
            tol: 1e-6,
            ..SinkhornConfig::new(reg as f32)
        };
        let got = problem.sinkhorn(&config).unwrap();
        let what = format!("{n}×{m}{tuning}, {placement:?}");
        assert!(
            got.converged,
            "{what}: not converged, error {}",
            got.final_error
        );
        // Errors far above or below 1e-6 at every check: the same check stops both.
        assert_eq!(got.iterations, want.iterations, "{what}: iterations");
        assert_eq!(got.errors.len(), want.errors.len(), "{what}: checks");
        assert!(got.final_error < 1e-6);
        assert_matches_pot(
            &what,
            &c,
            (&got.f, &got.g, got.cost),
            &want,
            reg,
            p_rtol(reg, n, m),
        );
        g.assert_unchanged();
    }
}

#[test]
fn sinkhorn_at_eta_1200_matches_pot_step_for_step_dense_and_on_the_fly() {
    eta_1200_step_for_step(Placement::Separate);
}

#[test]
fn sinkhorn_at_eta_1200_with_a_b_the_cost_and_the_points_packed_in_one_buffer() {
    eta_1200_step_for_step(Placement::Packed);
}

fn eta_1200_step_for_step(placement: Placement) {
    // The paper's random problem: 500 uniform points in [0, 1]², squared-Euclidean cost
    // scaled to [0, 1], η = 1200; 300 iterations (far from converged), history compared.
    let gpu = gpu();
    let (n, m, reg) = (500, 500, 1.0 / 1200.0);
    let x = exact(r::random_points(n, 2, 1));
    let y = exact(r::random_points(m, 2, 2));
    let (c, scale) = unit_scaled(&r::sq_euclidean_cost(&x, &y, 2));
    let (a, b) = (histogram(n, 3), histogram(m, 4));
    let want = r::sinkhorn_log(&a, &b, &c, reg, 300, 1e-9, 10);
    let g = upload_placed(gpu, placement, &a, &b, &c, &[&x, &y]);
    let (gx, gy) = (&g.points[0], &g.points[1]);
    let config = SinkhornConfig {
        max_iter: 300,
        tol: 1e-9,
        ..SinkhornConfig::new(reg as f32)
    };
    for (form, cost) in g.both_forms(gx, gy, Metric::SqEuclidean, scale) {
        let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
        let got = problem.sinkhorn(&config).unwrap();
        assert!(!got.converged);
        assert_eq!(got.iterations, 300);
        assert_eq!(got.errors.len(), want.errors.len());
        for (k, (e, w)) in got.errors.iter().zip(&want.errors).enumerate() {
            // The error is a difference of P's column sums and b: P's relative budget.
            assert_relative(&format!("{form}: error at check {k}"), *e as f64, *w, 1e-2);
        }
        assert_matches_pot(
            &format!("{form}, {placement:?}"),
            &c,
            (&got.f, &got.g, got.cost),
            &want,
            reg,
            p_rtol(reg, n, m),
        );
    }
    g.assert_unchanged();
}

#[test]
fn synthetic_images_with_l1_and_squared_l2_ground_costs() {
    // Two 28×28 images of Gaussian blobs; the ground cost between pixel positions, scaled to
    // [0, 1]; η = 1200 for 150 iterations, dense and on the fly against the reference.
    let gpu = gpu();
    let side = 28;
    let (a, b) = r::blob_image_pair(side);
    let (a, b) = (exact(a), exact(b));
    let pixels = exact(r::pixel_grid(side));
    let gp = GpuVec::upload(gpu, &as_f32(&pixels)).unwrap();
    let reg = 1.0 / 1200.0;
    for (name, metric, raw) in [
        ("L1", Metric::Lp(1.0), r::lp_cost(&pixels, &pixels, 2, 1.0)),
        (
            "squared L2",
            Metric::SqEuclidean,
            r::sq_euclidean_cost(&pixels, &pixels, 2),
        ),
    ] {
        let (c, scale) = unit_scaled(&raw);
        let want = r::sinkhorn_log(&a, &b, &c, reg, 150, 1e-9, 10);
        let g = upload(gpu, &a, &b, &c);
        let config = SinkhornConfig {
            max_iter: 150,
            tol: 1e-9,
            ..SinkhornConfig::new(reg as f32)
        };
        for (form, cost) in g.both_forms(&gp, &gp, metric, scale) {
            let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
            let got = problem.sinkhorn(&config).unwrap();
            let what = format!("{name}, {form}");
            let rtol = p_rtol(reg, side * side, side * side);
            let got = (&got.f, &got.g, got.cost);
            assert_matches_pot(&what, &c, got, &want, reg, rtol);
        }
    }
}

#[test]
fn rows_past_65535_workgroups_fold_into_a_2d_grid() {
    // The row pass runs one workgroup per row (per 4 rows for dense costs on CPU adapters):
    // 70,001 rows of 5 on-the-fly columns (points in 1-D) and 262,145 = 4·65,535 + 5 rows of a
    // dense 4-column cost both need the 2-D grid.
    let gpu = gpu();
    let reg = 0.1;
    for (n, m, dense) in [(70_001, 5, false), (262_145, 4, true)] {
        let x = exact(r::random_points(n, 1, 5));
        let y = exact(r::random_points(m, 1, 6));
        let c = exact(r::sq_euclidean_cost(&x, &y, 1));
        let (a, b) = (histogram(n, 7), histogram(m, 8));
        let want = r::sinkhorn_log(&a, &b, &c, reg, 20, 1e-9, 10);
        let g = upload(gpu, &a, &b, &c);
        let (gx, gy) = (
            GpuVec::upload(gpu, &as_f32(&x)).unwrap(),
            GpuVec::upload(gpu, &as_f32(&y)).unwrap(),
        );
        let cost = if dense {
            Cost::Dense(g.c.view())
        } else {
            Cost::Points {
                x: gx.view(),
                y: gy.view(),
                dim: 1,
                metric: Metric::SqEuclidean,
                scale: 1.0,
            }
        };
        let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
        let got = problem
            .sinkhorn(&SinkhornConfig {
                max_iter: 20,
                tol: 1e-9,
                ..SinkhornConfig::new(reg as f32)
            })
            .unwrap();
        assert_matches_pot(
            &format!("{n}×{m}"),
            &c,
            (&got.f, &got.g, got.cost),
            &want,
            reg,
            p_rtol(reg, n, m),
        );
    }
}

#[test]
fn sns_reaches_sinkhorns_solution_in_a_few_newton_steps() {
    // The paper's random problem (η = 1200), square and not; SNS and Sinkhorn both to 1e-5.
    // Two solutions with marginal errors ≤ 1e-5 differ by O(1e-5) in P's mass, so their
    // transport costs agree to ~1e-5/min(a) relative at worst; 1e-3 is asked.
    // m a multiple of 4 evaluates through the vec4 kernels (col_sums4, select_rows4), 301
    // through the per-entry ones.
    let gpu = gpu();
    let reg = 1.0 / 1200.0;
    for (n, m) in [(500, 500), (300, 200), (201, 301)] {
        let Random { a, b, c } = random(n, m, [11, 12, 13, 14]);
        let g = upload(gpu, &a, &b, &c);
        let problem = g.dense(gpu);
        let sns = problem.sns(&SnsConfig::new(reg as f32)).unwrap();
        let what = format!("SNS {n}×{m}");
        assert!(
            sns.converged,
            "{what}: error {} after {} Newton steps",
            sns.final_error, sns.newton_iterations
        );
        assert!(sns.final_error < 1e-5);
        assert!(
            sns.newton_iterations <= 15,
            "{what}: {} Newton steps",
            sns.newton_iterations
        );
        assert_eq!(sns.cg_iterations.len(), sns.newton_iterations);
        assert_eq!(sns.newton_errors.len(), sns.newton_iterations + 1);
        // The reported error is the f64 marginal error of the returned potentials.
        let (f, gg) = (
            as_f64(&sns.f.read().unwrap()),
            as_f64(&sns.g.read().unwrap()),
        );
        let (rows, cols) = r::marginals(&c, &f, &gg, reg);
        let err = rows
            .iter()
            .zip(&a)
            .chain(cols.iter().zip(&b))
            .map(|(p, w)| (p - w).powi(2))
            .sum::<f64>()
            .sqrt();
        // The GPU's f32 sums against f64 ones of the same potentials: P's relative budget on
        // masses of ~1/n each, summed in quadrature over n + m marginals.
        let budget = p_rtol(reg, n, m) * ((n + m) as f64).sqrt() / n.min(m) as f64;
        assert!(
            (err - sns.final_error as f64).abs() <= budget,
            "{what}: reported {} vs f64 {err}",
            sns.final_error
        );
        let sinkhorn = problem
            .sinkhorn(&SinkhornConfig {
                max_iter: 100_000,
                ..SinkhornConfig::new(reg as f32)
            })
            .unwrap();
        assert!(sinkhorn.converged);
        println!(
            "{what}: {} Sinkhorn + {} Newton (CG {:?}) vs Sinkhorn {} iterations",
            sns.sinkhorn_iterations, sns.newton_iterations, sns.cg_iterations, sinkhorn.iterations
        );
        assert_relative(&what, sns.cost, sinkhorn.cost, 1e-3);
        assert_relative(&what, sns.cost, r::transport_cost(&c, &f, &gg, reg), 1e-4);
    }
}

#[test]
fn sns_takes_the_same_steps_on_vec4_rows_as_per_entry() {
    sns_vec4_and_per_entry(Placement::Separate);
}

#[test]
fn sns_with_a_b_the_cost_and_the_points_packed_in_one_buffer() {
    sns_vec4_and_per_entry(Placement::Packed);
}

fn sns_vec4_and_per_entry(placement: Placement) {
    // One problem, its dense cost read as vec4 (m = 200) and its points read per entry: the
    // costs differ by f32 rounding only, so the Newton steps, their step sizes and the
    // solutions agree (P's relative budget on the plan, 1e-4 on ⟨C, P⟩ as against POT).
    let gpu = gpu();
    let (n, m, reg) = (300, 200, 1.0 / 1200.0);
    let x = exact(r::random_points(n, 2, 21));
    let y = exact(r::random_points(m, 2, 22));
    let (c, scale) = unit_scaled(&r::sq_euclidean_cost(&x, &y, 2));
    let (a, b) = (histogram(n, 23), histogram(m, 24));
    let g = upload_placed(gpu, placement, &a, &b, &c, &[&x, &y]);
    let (gx, gy) = (&g.points[0], &g.points[1]);
    let runs: Vec<_> = g
        .both_forms(gx, gy, Metric::SqEuclidean, scale)
        .into_iter()
        .map(|(form, cost)| {
            let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
            let sns = problem.sns(&SnsConfig::new(reg as f32)).unwrap();
            assert!(sns.converged, "{form}: error {}", sns.final_error);
            let (f, gg) = (sns.f.read().unwrap(), sns.g.read().unwrap());
            (sns, f, gg)
        })
        .collect();
    let [(dense, df, dg), (points, pf, pg)] = &runs[..] else {
        unreachable!("two forms")
    };
    assert_eq!(dense.newton_iterations, points.newton_iterations);
    assert_eq!(dense.step_sizes, points.step_sizes);
    let want = (as_f64(pf), as_f64(pg));
    let rtol = p_rtol(reg, n, m);
    assert_plans_agree(
        "vec4 vs per entry",
        &c,
        (df, dg),
        (&want.0, &want.1),
        reg,
        rtol,
    );
    assert_relative("vec4 vs per entry", dense.cost, points.cost, 1e-4);
    g.assert_unchanged();
}

#[test]
fn top_k_and_the_dense_plan_follow_the_potentials() {
    let gpu = gpu();
    let (n, m, reg) = (37, 3, 0.05);
    let Random { a, b, c } = random(n, m, [21, 22, 23, 24]);
    let g = upload(gpu, &a, &b, &c);
    let problem = g.dense(gpu);
    let s = problem.sinkhorn(&SinkhornConfig::new(reg as f32)).unwrap();
    let (f, gg) = (as_f64(&s.f.read().unwrap()), as_f64(&s.g.read().unwrap()));
    let want = r::plan(&c, &f, &gg, reg);
    let dense = problem
        .plan(&s.f, &s.g, reg as f32)
        .unwrap()
        .read()
        .unwrap();
    crate::common::assert_close("dense plan", &dense, &want, 0.0, p_rtol(reg, n, m));
    // k = 5 > m = 3: the last two of each row are padding.
    let k = 5;
    let top = problem.top_k(&s.f, &s.g, reg as f32, k).unwrap();
    let (cols, vals) = (top.columns.read().unwrap(), top.values.read().unwrap());
    for i in 0..n {
        let mut row: Vec<(f64, usize)> = (0..m).map(|j| (want[i * m + j], j)).collect();
        row.sort_by(|p, q| q.0.total_cmp(&p.0));
        for (t, &(v, j)) in row.iter().enumerate() {
            assert_eq!(cols[i * k + t] as usize, j, "row {i}, rank {t}");
            assert!((vals[i * k + t] as f64 - v).abs() <= p_rtol(reg, n, m) * v);
        }
        for t in m..k {
            assert_eq!((cols[i * k + t] as usize, vals[i * k + t]), (m, 0.0));
        }
    }
    assert_param(problem.top_k(&s.f, &s.g, reg as f32, 0), "k", 0.0);
    assert_param(
        problem.top_k(&s.f, &s.g, reg as f32, MAX_TOP_K + 1),
        "k",
        (MAX_TOP_K + 1) as f64,
    );
}

#[test]
fn non_convergence_is_reported_with_the_error_reached() {
    let gpu = gpu();
    let (n, reg) = (64, 1.0 / 1200.0);
    let Random { a, b, c } = random(n, n, [31, 31, 32, 33]);
    let g = upload(gpu, &a, &b, &c);
    let problem = g.dense(gpu);
    // 25 iterations, checks after 1, 11 and 21; the final error is measured after 25.
    let got = problem
        .sinkhorn(&SinkhornConfig {
            max_iter: 25,
            tol: 1e-9,
            ..SinkhornConfig::new(reg as f32)
        })
        .unwrap();
    let want = r::sinkhorn_log(&a, &b, &c, reg, 25, 1e-9, 10);
    assert!(!got.converged && !want.converged);
    assert_eq!((got.iterations, got.errors.len()), (25, 3));
    let (f, gg) = (
        as_f64(&got.f.read().unwrap()),
        as_f64(&got.g.read().unwrap()),
    );
    let (_, cols) = r::marginals(&c, &f, &gg, reg);
    let err = cols
        .iter()
        .zip(&b)
        .map(|(p, w)| (p - w).powi(2))
        .sum::<f64>()
        .sqrt();
    assert_relative("final error", got.final_error as f64, err, 1e-2);
    assert!(got.final_error.is_finite() && got.final_error > 1e-9);
}

#[test]
fn bad_problems_are_typed_errors() {
    let gpu = gpu();
    let good = GpuVec::upload(gpu, &[0.25f32, 0.75]).unwrap();
    let c = GpuVec::upload(gpu, &[0.0f32, 1.0, 1.0, 0.0]).unwrap();
    fn new<'a>(
        a: &'a GpuVec<f32>,
        b: &'a GpuVec<f32>,
        c: &'a GpuVec<f32>,
        masses: Masses,
    ) -> curvgpu::Result<OtProblem<'a>> {
        OtProblem::new(crate::common::gpu(), a, b, Cost::Dense(c.view()), masses)
    }
    let empty = curvgpu::BufView::new(good.buffer(), 0, 0);
    let (g, cv) = (good.view(), c.view());
    assert_empty(
        OtProblem::new(gpu, empty, g, Cost::Dense(cv), Masses::Equal),
        "a",
    );
    assert_empty(
        OtProblem::new(gpu, g, empty, Cost::Dense(cv), Masses::Equal),
        "b",
    );
    let negative = GpuVec::upload(gpu, &[1.25f32, -0.25]).unwrap();
    match new(&negative, &good, &c, Masses::Equal) {
        Err(Error::Negative {
            argument: "a",
            index: 1,
            ..
        }) => {}
        other => panic!("expected Negative {{ a, 1 }}, got {other:?}"),
    }
    let nan = GpuVec::upload(gpu, &[f32::NAN, 1.0]).unwrap();
    match new(&good, &nan, &c, Masses::Equal) {
        Err(Error::NonFinite {
            argument: "b",
            index: 0,
            ..
        }) => {}
        other => panic!("expected NonFinite {{ b, 0 }}, got {other:?}"),
    }
    for bad in [[0.0f32, 1.0, -1.0, 0.0], [0.0, f32::INFINITY, 1.0, 0.0]] {
        let bad = GpuVec::upload(gpu, &bad).unwrap();
        match new(&good, &good, &bad, Masses::Equal) {
            Err(Error::Negative {
                argument: "cost",
                index: 2,
                ..
            })
            | Err(Error::NonFinite {
                argument: "cost",
                index: 1,
                ..
            }) => {}
            other => panic!("expected a bad cost, got {other:?}"),
        }
    }
    let zero = GpuVec::upload(gpu, &[0.0f32, 0.0]).unwrap();
    assert!(matches!(
        new(&zero, &good, &c, Masses::Renormalize),
        Err(Error::Mass { .. })
    ));
    let heavy = GpuVec::upload(gpu, &[0.5f32, 1.0]).unwrap();
    assert!(matches!(
        new(&heavy, &good, &c, Masses::Equal),
        Err(Error::Mass { .. })
    ));
    // Renormalisation only when asked: then both total 1.
    let p = new(&heavy, &good, &c, Masses::Renormalize).unwrap();
    let total: f32 = p.a().read().unwrap().iter().sum();
    assert!((total - 1.0).abs() < 1e-6);
    crate::common::assert_length(new(&good, &good, &heavy, Masses::Equal), "cost", 4, 2);
    // Points: wrong lengths, dim 0, p < 1, scale ≤ 0.
    let xs = GpuVec::upload(gpu, &[0.0f32, 1.0, 2.0, 3.0]).unwrap();
    let points = |dim, metric, scale| Cost::Points {
        x: xs.view(),
        y: xs.view(),
        dim,
        metric,
        scale,
    };
    let with = |cost: Cost<'_>| OtProblem::new(gpu, &good, &good, cost, Masses::Equal).map(|_| ());
    crate::common::assert_length(with(points(3, Metric::SqEuclidean, 1.0)), "x", 6, 4);
    assert!(matches!(
        with(points(0, Metric::SqEuclidean, 1.0)),
        Err(Error::Shape {
            argument: "dim",
            ..
        })
    ));
    assert_param(with(points(2, Metric::Lp(0.5), 1.0)), "p", 0.5);
    assert_param(with(points(2, Metric::SqEuclidean, 0.0)), "scale", 0.0);
    let y1 = GpuVec::upload(gpu, &[0.0f32, 1.0, 2.0]).unwrap();
    let mismatch = Cost::Points {
        x: xs.view(),
        y: y1.view(),
        dim: 2,
        metric: Metric::SqEuclidean,
        scale: 1.0,
    };
    crate::common::assert_length(with(mismatch), "y", 4, 3);
    // Solver settings.
    let p = new(&good, &good, &c, Masses::Equal).unwrap();
    for reg in [0.0, -1.0, f32::NAN] {
        assert_param(p.sinkhorn(&SinkhornConfig::new(reg)), "reg", reg as f64);
        assert_param(p.sns(&SnsConfig::new(reg)), "reg", reg as f64);
    }
    assert_param(
        p.sinkhorn(&SinkhornConfig {
            check_every: 0,
            ..SinkhornConfig::new(0.1)
        }),
        "check_every",
        0.0,
    );
    assert_param(
        p.sns(&SnsConfig {
            density: Some(0.0),
            ..SnsConfig::new(0.1)
        }),
        "density",
        0.0,
    );
    // Zero mass: Sinkhorn accepts it, SNS refuses (its Newton system would be singular).
    let sparse = GpuVec::upload(gpu, &[1.0f32, 0.0]).unwrap();
    let p = new(&sparse, &good, &c, Masses::Renormalize).unwrap();
    assert!(p.sinkhorn(&SinkhornConfig::new(0.1)).unwrap().converged);
    assert!(matches!(
        p.sns(&SnsConfig::new(0.1)),
        Err(Error::Mass { .. })
    ));
}

#[test]
fn overlapping_read_only_inputs_a_and_b_one_view_x_and_y_one_view() {
    // A square problem with equal weights between a cloud and itself, its histogram passed as
    // both a and b and its points as both x and y, next to the dense cost in one buffer: OT
    // only reads these views, so overlapping ones are fine (the dense 64 columns take the
    // vec4 kernels, 63 the per-entry ones).
    let gpu = gpu();
    let reg = 0.05;
    for n in [63, 64] {
        let x = exact(r::random_points(n, 2, 70 + n as u64));
        let (c, scale) = unit_scaled(&r::sq_euclidean_cost(&x, &x, 2));
        let h = histogram(n, 71);
        let want = r::sinkhorn_log(&h, &h, &c, reg, 1000, 1e-6, 10);
        assert!(want.converged);
        let placed = place(gpu, Placement::Packed, &[&h, &c, &x]);
        let [gh, gc, gx] = &placed[..] else {
            unreachable!("three parts")
        };
        let points = Cost::Points {
            x: gx.view(),
            y: gx.view(),
            dim: 2,
            metric: Metric::SqEuclidean,
            scale: scale as f32,
        };
        for (form, cost) in [("dense", Cost::Dense(gc.view())), ("on the fly", points)] {
            let what = format!("{n}×{n} {form}, a = b, x = y");
            let problem = OtProblem::new(gpu, gh, gh, cost, Masses::Equal).unwrap();
            let got = problem
                .sinkhorn(&SinkhornConfig {
                    tol: 1e-6,
                    ..SinkhornConfig::new(reg as f32)
                })
                .unwrap();
            assert!(got.converged, "{what}: error {}", got.final_error);
            let rtol = p_rtol(reg, n, n);
            assert_matches_pot(&what, &c, (&got.f, &got.g, got.cost), &want, reg, rtol);
            let sns = problem.sns(&SnsConfig::new(reg as f32)).unwrap();
            assert!(sns.converged, "{what}: SNS error {}", sns.final_error);
            let (f, g) = (
                as_f64(&sns.f.read().unwrap()),
                as_f64(&sns.g.read().unwrap()),
            );
            assert_relative(&what, sns.cost, r::transport_cost(&c, &f, &g, reg), 1e-4);
        }
        for (v, want) in placed.iter().zip([&h, &c, &x]) {
            assert_eq!(v.read().unwrap(), as_f32(want), "{n}: an input was written");
        }
    }
}

#[test]
fn every_iteration_limit_refuses_zero_and_fixed_counts_allow_it() {
    // One rule with CG's `maxiter`: a limit of 0 iterations is InvalidParameter (Sinkhorn used
    // to return f = g = 0 for max_iter = 0 without a word).
    let gpu = gpu();
    let good = GpuVec::upload(gpu, &[0.25f32, 0.75]).unwrap();
    let c = GpuVec::upload(gpu, &[0.0f32, 1.0, 1.0, 0.0]).unwrap();
    let p = OtProblem::new(gpu, &good, &good, Cost::Dense(c.view()), Masses::Equal).unwrap();
    let sinkhorn = |max_iter| SinkhornConfig {
        max_iter,
        ..SinkhornConfig::new(0.1)
    };
    assert_param(p.sinkhorn(&sinkhorn(0)), "max_iter", 0.0);
    assert_eq!(p.sinkhorn(&sinkhorn(1)).unwrap().iterations, 1);
    let sns = SnsConfig::new(0.1);
    for (name, config) in [
        (
            "max_newton",
            SnsConfig {
                max_newton: 0,
                ..sns
            },
        ),
        (
            "cg_maxiter",
            SnsConfig {
                cg_maxiter: 0,
                ..sns
            },
        ),
    ] {
        assert_param(p.sns(&config), name, 0.0);
    }
    // Counts, not limits: no Sinkhorn steps (Newton from f = g = 0), full Newton steps only.
    let got = p
        .sns(&SnsConfig {
            sinkhorn_steps: 0,
            max_halvings: 0,
            ..sns
        })
        .unwrap();
    assert_eq!(got.sinkhorn_iterations, 0);
    assert!(got.sinkhorn_errors.is_empty());
    assert!(
        got.step_sizes.iter().all(|&s| s == 1.0),
        "{:?}",
        got.step_sizes
    );
    assert!(got.converged, "error {}", got.final_error);
}

/// The parts of an SNS failure: `Error::Breakdown` with method "sns" at Newton step `step`,
/// whose message names the stage and the step, says what to change, and never carries CG's
/// words about "the operator" (the caller passed none).
#[track_caller]
fn assert_sns_breakdown<T: std::fmt::Debug>(
    result: curvgpu::Result<T>,
    step: Option<usize>,
    says: &[&str],
) -> String {
    match result {
        Err(Error::Breakdown {
            method: "sns",
            iteration,
            message,
        }) => {
            if let Some(step) = step {
                assert_eq!(iteration, step, "{message}");
            }
            assert!(
                message.contains(&format!("Newton step {iteration} ")),
                "{message}"
            );
            for word in says {
                assert!(message.contains(word), "`{word}` missing: {message}");
            }
            assert!(!message.contains("operator"), "{message}");
            println!("{message}");
            message
        }
        other => panic!("expected Breakdown {{ sns }}, got {other:?}"),
    }
}

#[test]
fn sns_newton_failures_name_the_stage_the_step_and_what_to_change() {
    let gpu = gpu();
    let reg = 1.0 / 1200.0;
    // Row 0's costs all 1: from f = g = 0 (no Sinkhorn steps) at η = 1200 its entries
    // exp(−1200) are 0 in f32, so the first Newton system has a zero on its diagonal (which
    // Jacobi-preconditioned CG would report as a non-positive diagonal of "the operator").
    for n in [7, 8] {
        let Random { a, b, mut c } = random(n, n, [61, 62, 63, 64]);
        c[..n].fill(1.0);
        let g = upload(gpu, &a, &b, &c);
        let problem = g.dense(gpu);
        let no_sinkhorn = SnsConfig {
            sinkhorn_steps: 0,
            ..SnsConfig::new(reg as f32)
        };
        assert_sns_breakdown(
            problem.sns(&no_sinkhorn),
            Some(0),
            &["row 0 of P", "no mass", "sinkhorn_steps", "reg"],
        );
    }
    // The L1 ground cost at η = 1200 on a few hundred points in [0, 1]² (scaled to [0, 1]),
    // where the Newton stage fails after the 20 Sinkhorn steps: on lavapipe, with every
    // significant entry kept (300 a row), CG stops at `cg_maxiter` and no step size along its
    // direction makes progress; at n = 500 with the paper's 2 entries a row, CG on the
    // sparsified Hessian breaks down (pᵀHp ≤ 0 in f32). Either is the same error.
    for (n, density, forms) in [(300, None, 2), (500, Some(2.0 / 500.0), 1)] {
        let x = exact(r::random_points(n, 2, 1));
        let y = exact(r::random_points(n, 2, 2));
        let (c, scale) = unit_scaled(&r::lp_cost(&x, &y, 2, 1.0));
        let (a, b) = (histogram(n, 3), histogram(n, 4));
        let g = upload_placed(gpu, Placement::Separate, &a, &b, &c, &[&x, &y]);
        let both = g.both_forms(&g.points[0], &g.points[1], Metric::Lp(1.0), scale);
        for (form, cost) in both.into_iter().take(forms) {
            let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
            println!("L1, n = {n}, {form}:");
            let config = SnsConfig {
                density,
                stage: NewtonStage::Sparse,
                sinkhorn_steps: 20,
                switch_error: None,
                ..SnsConfig::new(reg as f32)
            };
            assert_sns_breakdown(problem.sns(&config), None, &["sinkhorn_steps", "`reg`"]);
        }
    }
}

#[test]
fn sinkhorn_solver_recorded_by_the_caller_is_the_blocking_solve_bit_for_bit() {
    // Dense with rows of 37 and 41 (per entry both ways), dense 64×64 (vec4 both ways) and
    // points: recorded in blocks of 3 that ignore POT's checks, run on past the stop, the
    // potentials copied into the caller's views: the same bits and the same status as the
    // blocking solve (which runs twice, bit-identically).
    let gpu = gpu();
    let reg = 0.05;
    for (n, m) in [(37, 41), (64, 64)] {
        let Random { a, b, c } = random(n, m, [41, 42, 43, 44]);
        let g = upload(gpu, &a, &b, &c);
        let x = exact(r::random_points(n, 2, 45));
        let y = exact(r::random_points(m, 2, 46));
        let (gx, gy) = (
            GpuVec::upload(gpu, &as_f32(&x)).unwrap(),
            GpuVec::upload(gpu, &as_f32(&y)).unwrap(),
        );
        let config = SinkhornConfig {
            tol: 1e-5,
            ..SinkhornConfig::new(reg as f32)
        };
        for (form, cost) in g.both_forms(&gx, &gy, Metric::SqEuclidean, 1.0) {
            let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
            let blocking = problem.sinkhorn(&config).unwrap();
            let again = problem.sinkhorn(&config).unwrap();
            assert!(blocking.converged, "{form} {n}×{m}: {:?}", blocking.errors);
            assert_eq!(blocking.f.read().unwrap(), again.f.read().unwrap());
            assert_eq!(blocking.g.read().unwrap(), again.g.read().unwrap());

            let solver = SinkhornSolver::new(&problem, &config).unwrap();
            assert_eq!(solver.dispatches_per_iteration(), 2);
            let mut rec = curvgpu::Recorder::new(gpu);
            solver.record_start(&mut rec).unwrap();
            rec.submit().unwrap();
            let mut blocks = 0;
            let status = loop {
                let mut rec = curvgpu::Recorder::new(gpu);
                solver.record_iterations(&mut rec, 3).unwrap();
                rec.submit().unwrap();
                blocks += 1;
                let s = pollster::block_on(solver.read_status_async()).unwrap();
                if s.finished() {
                    break s;
                }
                assert!(blocks < 400, "{form} {n}×{m}: no stop");
            };
            assert!(status.converged);
            assert_eq!(status.iterations, blocking.iterations);
            assert_eq!(status.errors, blocking.errors);
            assert_eq!(status.final_error, blocking.final_error);
            // Past the stop nothing changes.
            let mut rec = curvgpu::Recorder::new(gpu);
            solver.record_iterations(&mut rec, 5).unwrap();
            rec.submit().unwrap();
            assert_eq!(
                pollster::block_on(solver.read_status_async()).unwrap(),
                status
            );
            let out = GpuVec::<f32>::packed(gpu, &[n, m]).unwrap();
            let mut rec = curvgpu::Recorder::new(gpu);
            solver
                .record_potentials(&mut rec, out[0].view(), out[1].view())
                .unwrap();
            rec.submit().unwrap();
            assert_eq!(out[0].read().unwrap(), blocking.f.read().unwrap());
            assert_eq!(out[1].read().unwrap(), blocking.g.read().unwrap());
            let whole = GpuVec::<f32>::zeros(gpu, n + m).unwrap();
            let err = solver
                .record_potentials(
                    &mut curvgpu::Recorder::new(gpu),
                    curvgpu::BufView::new(whole.buffer(), 0, n),
                    curvgpu::BufView::new(whole.buffer(), 0, m),
                )
                .unwrap_err();
            assert!(matches!(err, Error::Overlap { .. }), "{err:?}");
        }
    }
}

#[test]
fn sinkhorn_budget_of_one_measures_its_iteration_and_a_check_can_stop_at_once() {
    let gpu = gpu();
    let (n, reg) = (16, 1.0);
    let Random { a, b, c } = random(n, n, [51, 52, 53, 54]);
    let g = upload(gpu, &a, &b, &c);
    let problem = g.dense(gpu);
    let one = problem
        .sinkhorn(&SinkhornConfig {
            max_iter: 1,
            tol: 1e-9,
            ..SinkhornConfig::new(reg as f32)
        })
        .unwrap();
    let want = r::sinkhorn_log(&a, &b, &c, reg, 1, 1e-9, 10);
    assert_eq!(
        (one.iterations, one.errors.len(), one.converged),
        (1, 1, false)
    );
    assert_relative("error", one.errors[0] as f64, want.errors[0], 1e-2);
    assert_eq!(one.final_error, one.errors[0]);
    // A tolerance the first check meets: one iteration, converged.
    let loose = problem
        .sinkhorn(&SinkhornConfig {
            tol: 1.0,
            ..SinkhornConfig::new(reg as f32)
        })
        .unwrap();
    assert_eq!((loose.iterations, loose.converged), (1, true));
    assert_eq!(loose.f.read().unwrap(), one.f.read().unwrap());
}

#[test]
fn ssns_solves_the_l1_ground_cost_at_eta_1200_where_plain_sns_breaks_down() {
    // The problem plain SNS fails on (above): the marginal error of the returned potentials,
    // recomputed in f64 from them, is below the tolerance (twice it: the f32 potentials'
    // own rounding moves P by ≈ 5u/reg relative, 3e-4·1/n a row).
    let gpu = gpu();
    let reg = 1.0 / 1200.0;
    for n in [300, 500] {
        let x = exact(r::random_points(n, 2, 1));
        let y = exact(r::random_points(n, 2, 2));
        let (c, scale) = unit_scaled(&r::lp_cost(&x, &y, 2, 1.0));
        let (a, b) = (histogram(n, 3), histogram(n, 4));
        let g = upload_placed(gpu, Placement::Separate, &a, &b, &c, &[&x, &y]);
        let both = g.both_forms(&g.points[0], &g.points[1], Metric::Lp(1.0), scale);
        for (form, cost) in both {
            let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
            let got = problem.sns(&SnsConfig::new(reg as f32)).unwrap();
            println!(
                "L1 n = {n} {form}: {} Newton steps, steps {:?}, kept {:?}, errors {:?}",
                got.newton_iterations, got.step_sizes, got.kept_entries, got.newton_errors
            );
            assert!(got.converged, "{form}: {:?}", got.newton_errors);
            let (f, gg) = (
                as_f64(&got.f.read().unwrap()),
                as_f64(&got.g.read().unwrap()),
            );
            let (rows, cols) = r::marginals(&c, &f, &gg, reg);
            let err = rows
                .iter()
                .zip(&a)
                .chain(cols.iter().zip(&b))
                .map(|(p, w)| (p - w).powi(2))
                .sum::<f64>()
                .sqrt();
            assert!(err < 2e-5, "{form}: f64 marginal error {err:e}");
        }
    }
}

#[test]
fn points_of_300_coordinates_stay_within_the_drivers_loop_limit() {
    // 1000 points of 300 coordinates a side: a row pass of 8 invocations over 1000 on-the-fly
    // costs loops 37,500 times through the coordinates per row, 150,000 for four rows, past
    // llvmpipe's 65,535 (which silently ends the loop); the passes take more invocations.
    let gpu = gpu();
    let (n, dim, reg) = (1000, 300, 0.05);
    let x = exact(r::random_points(n, dim, 71));
    let y = exact(r::random_points(n, dim, 72));
    let (c, scale) = unit_scaled(&r::sq_euclidean_cost(&x, &y, dim));
    let (a, b) = (histogram(n, 73), histogram(n, 74));
    let want = r::sinkhorn_log(&a, &b, &c, reg, 30, 1e-9, 10);
    let g = upload_placed(gpu, Placement::Separate, &a, &b, &c, &[&x, &y]);
    let cost = Cost::Points {
        x: g.points[0].view(),
        y: g.points[1].view(),
        dim,
        metric: Metric::SqEuclidean,
        scale: scale as f32,
    };
    let problem = OtProblem::new(gpu, &g.a, &g.b, cost, Masses::Renormalize).unwrap();
    let got = problem
        .sinkhorn(&SinkhornConfig {
            max_iter: 30,
            tol: 1e-9,
            ..SinkhornConfig::new(reg as f32)
        })
        .unwrap();
    assert_matches_pot(
        "1000 points of 300",
        &c,
        (&got.f, &got.g, got.cost),
        &want,
        reg,
        p_rtol(reg, n, n),
    );
}
