//! C = α·op(A)·op(B) + β·C against `curvgpu::reference::linalg::gemm` (f64).
//!
//! Tolerances. Inputs are rounded to f32 first, so both sides multiply the same numbers and the
//! f64 reference is exact to ~k·2⁻⁵³ (negligible). Each invocation accumulates its dot product
//! in f32 in k order (one rounding per product and per addition, FMA or not), then scales by α
//! and adds β·c: |ĉ − c| ≤ γ_{k+2}·(|α|·Σ|a||b| + |β|·|c|) with γ_m = m·u/(1 − m·u),
//! u = 2⁻²⁴ (Higham, §3.5). With integer data in −8..8 and k ≤ 1,000 every partial sum is an
//! integer below 2²⁴: those products are exact in any order, so equality is asserted.

use crate::common::{as_f32, as_f64, both_gpus, gamma, gpu, integers, randoms};
use curvgpu::linalg::{gemm, record_gemm, Gemm};
use curvgpu::reference::linalg as reference;
use curvgpu::{Gpu, GpuVec, Recorder};

/// Runs one (possibly batched) product with C preset to `c0`; returns C.
fn run(gpu: &Gpu, shape: &Gemm, a: &[f64], b: &[f64], c0: &[f64]) -> Vec<f32> {
    let av = GpuVec::upload(gpu, &as_f32(a)).unwrap();
    let bv = GpuVec::upload(gpu, &as_f32(b)).unwrap();
    let cv = GpuVec::upload(gpu, &as_f32(c0)).unwrap();
    let mut rec = Recorder::new(gpu);
    record_gemm(&mut rec, shape, av.view(), bv.view(), cv.view()).unwrap();
    rec.submit().unwrap();
    cv.read().unwrap()
}

/// α·op(A)op(B) + β·C0 per batch item, and the error bound of each entry.
fn expected(shape: &Gemm, a: &[f64], b: &[f64], c0: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (m, n, k) = (shape.m, shape.n, shape.k);
    let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
    let mut want = Vec::new();
    let mut bound = Vec::new();
    for i in 0..shape.batch {
        let ai = &a[i * m * k..(i + 1) * m * k];
        let bi = &b[i * k * n..(i + 1) * k * n];
        let ci = &c0[i * m * n..(i + 1) * m * n];
        let p = reference::gemm(m, k, n, ai, bi, shape.trans_a, shape.trans_b);
        let pa = reference::gemm(m, k, n, &abs(ai), &abs(bi), shape.trans_a, shape.trans_b);
        for e in 0..m * n {
            let beta_c = if shape.beta == 0.0 {
                0.0
            } else {
                shape.beta as f64 * ci[e]
            };
            want.push(shape.alpha as f64 * p[e] + beta_c);
            bound.push(gamma(k + 2) * (shape.alpha.abs() as f64 * pa[e] + beta_c.abs()));
        }
    }
    (want, bound)
}

#[track_caller]
fn assert_within(what: &str, got: &[f32], want: &[f64], bound: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= b,
            "{what}: C[{i}] = {g}, f64 {w}, error {err:e} > bound {b:e}"
        );
    }
}

const FORMS: [(bool, bool, &str); 4] = [
    (false, false, "NN"),
    (false, true, "NT"),
    (true, false, "TN"),
    (true, true, "TT"),
];

#[test]
fn every_form_matches_f64_on_odd_shapes() {
    // 1×1·1×1; 17×33·33×5 (the odd shape); tiles cut on every side (65×63·63×129).
    let shapes = [(1, 1, 1), (17, 5, 33), (65, 129, 63), (3, 2, 257)];
    for (s, &(m, n, k)) in shapes.iter().enumerate() {
        for (f, &(ta, tb, form)) in FORMS.iter().enumerate() {
            let shape = Gemm {
                trans_a: ta,
                trans_b: tb,
                alpha: 0.75,
                beta: -1.5,
                ..Gemm::new(m, n, k)
            };
            let seed = 10 * s as u64 + f as u64;
            let (a, b, c0) = (
                randoms(m * k, seed),
                randoms(k * n, seed + 100),
                randoms(m * n, seed + 200),
            );
            let (want, bound) = expected(&shape, &a, &b, &c0);
            for (name, gpu) in both_gpus() {
                let got = run(gpu, &shape, &a, &b, &c0);
                assert_within(
                    &format!("{form} {m}×{k}·{k}×{n} ({name})"),
                    &got,
                    &want,
                    &bound,
                );
            }
        }
    }
}

#[test]
fn integer_products_are_exact_up_to_1000_cubed() {
    for &(m, n, k) in &[(1, 1, 1), (17, 5, 33), (1000, 1000, 1000)] {
        for &(ta, tb, form) in &FORMS[..3] {
            let shape = Gemm {
                trans_a: ta,
                trans_b: tb,
                ..Gemm::new(m, n, k)
            };
            let (a, b) = (integers(m * k, 7), integers(k * n, 8));
            let want = reference::gemm(m, k, n, &a, &b, ta, tb);
            let got = gemm(
                gpu(),
                &shape,
                &GpuVec::upload(gpu(), &as_f32(&a)).unwrap(),
                &GpuVec::upload(gpu(), &as_f32(&b)).unwrap(),
            )
            .unwrap()
            .read()
            .unwrap();
            assert_eq!(as_f64(&got), want, "{form} {m}×{k}·{k}×{n}");
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c() {
    let shape = Gemm::new(5, 7, 3);
    let (a, b) = (randoms(15, 1), randoms(21, 2));
    let c0 = vec![f64::NAN; 35];
    let (want, bound) = expected(&shape, &a, &b, &vec![0.0; 35]);
    let got = run(gpu(), &shape, &a, &b, &c0);
    assert_within("β = 0 over NaN", &got, &want, &bound);
}

#[test]
fn a_batch_of_products_matches_each_product() {
    // 3 products of 33×20·20×66, TN, with α and β.
    let shape = Gemm {
        trans_a: true,
        alpha: 2.0,
        beta: 0.5,
        batch: 3,
        ..Gemm::new(33, 66, 20)
    };
    let (a, b, c0) = (
        randoms(3 * 33 * 20, 4),
        randoms(3 * 20 * 66, 5),
        randoms(3 * 33 * 66, 6),
    );
    let (want, bound) = expected(&shape, &a, &b, &c0);
    for (name, gpu) in both_gpus() {
        assert_within(
            &format!("batch of 3 ({name})"),
            &run(gpu, &shape, &a, &b, &c0),
            &want,
            &bound,
        );
    }
}

#[test]
fn symmetric_products_compute_the_lower_triangle_and_mirror_it() {
    // XᵀX for X 100×70 (TN) and X·Xᵀ for X 130×9 (NT): each tile layout, with β on a
    // symmetric C.
    for &(n, k, ta, tb) in &[(70, 100, true, false), (130, 9, false, true)] {
        let x = randoms(n * k, n as u64);
        let s0 = reference::gemm(n, n, n, &randoms(n * n, 3), &randoms(n * n, 3), false, true);
        let c0 = as_f64(&as_f32(&s0));
        let shape = Gemm {
            trans_a: ta,
            trans_b: tb,
            beta: 0.25,
            symmetric: true,
            ..Gemm::new(n, n, k)
        };
        let (want, bound) = expected(&shape, &x, &x, &c0);
        for (name, gpu) in both_gpus() {
            let got = run(gpu, &shape, &x, &x, &c0);
            assert_within(
                &format!("symmetric {n}×{n}, k = {k} ({name})"),
                &got,
                &want,
                &bound,
            );
            for i in 0..n {
                for j in 0..i {
                    assert_eq!(
                        got[i * n + j],
                        got[j * n + i],
                        "C not symmetric at ({i}, {j})"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_shapes_and_parameters_are_typed_errors() {
    use crate::common::{assert_empty, assert_length, assert_param};
    use curvgpu::Error;
    let gpu = gpu();
    let v = |n: usize| GpuVec::<f32>::zeros(gpu, n).unwrap();
    let (a, b, c) = (v(6), v(12), v(8));
    let record = |shape: &Gemm,
                  a: &curvgpu::GpuVec<f32>,
                  b: &curvgpu::GpuVec<f32>,
                  c: &curvgpu::GpuVec<f32>| {
        let mut rec = Recorder::new(gpu);
        let result = record_gemm(&mut rec, shape, a.view(), b.view(), c.view());
        assert!(
            result.is_ok() || rec.is_empty(),
            "a refused product recorded nothing"
        );
        result
    };
    let ok = Gemm::new(2, 4, 3);
    assert!(record(&ok, &a, &b, &c).is_ok());
    for (name, shape) in [
        ("m", Gemm { m: 0, ..ok }),
        ("n", Gemm { n: 0, ..ok }),
        ("k", Gemm { k: 0, ..ok }),
        ("batch", Gemm { batch: 0, ..ok }),
    ] {
        assert_empty(record(&shape, &a, &b, &c), name);
    }
    assert_length(record(&ok, &v(5), &b, &c), "a", 6, 5);
    assert_length(record(&ok, &a, &v(13), &c), "b", 12, 13);
    assert_length(record(&Gemm { batch: 2, ..ok }, &a, &b, &c), "a", 12, 6);
    assert_param(
        record(
            &Gemm {
                alpha: f32::NAN,
                ..ok
            },
            &a,
            &b,
            &c,
        ),
        "alpha",
        f32::NAN,
    );
    assert_param(
        record(
            &Gemm {
                beta: f32::INFINITY,
                ..ok
            },
            &a,
            &b,
            &c,
        ),
        "beta",
        f32::INFINITY,
    );
    match record(
        &Gemm {
            symmetric: true,
            ..ok
        },
        &a,
        &b,
        &c,
    ) {
        Err(Error::Shape { argument: "c", .. }) => {}
        other => panic!("expected Shape {{ c }}, got {other:?}"),
    }
}

#[test]
fn sub_matrices_with_leading_dimensions_and_offsets_match_f64() {
    // The 40×30 block at (5, 7) of a 50×61 A, transposed use of the 30×20 block at (2, 3) of
    // a 41×33 B (stored 20×30 there), into the 40×20 block at (1, 2) of a 45×25 C; C's other
    // entries must stay untouched.
    let (m, n, k) = (40, 20, 30);
    let a_full = randoms(50 * 61, 31);
    let b_full = randoms(41 * 33, 32);
    let c_full = randoms(45 * 25, 33);
    let block = |full: &[f64], ld: usize, r0: usize, c0: usize, rows: usize, cols: usize| {
        (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| full[(r0 + r) * ld + c0 + c])
            .collect::<Vec<_>>()
    };
    let a = block(&a_full, 61, 5, 7, m, k);
    let b = block(&b_full, 33, 2, 3, n, k);
    let c0 = block(&c_full, 25, 1, 2, m, n);
    let shape = Gemm {
        trans_b: true,
        alpha: -1.0,
        beta: 1.0,
        ld: [Some(61), Some(33), Some(25)],
        offsets: [5 * 61 + 7, 2 * 33 + 3, 25 + 2],
        ..Gemm::new(m, n, k)
    };
    let packed = Gemm {
        ld: [None; 3],
        offsets: [0; 3],
        ..shape
    };
    let (want, bound) = expected(&packed, &a, &b, &c0);
    for (name, gpu) in both_gpus() {
        let got = run(gpu, &shape, &a_full, &b_full, &c_full);
        let inside = block(&as_f64(&got), 25, 1, 2, m, n);
        assert_within(
            &format!("sub-matrices ({name})"),
            &as_f32(&inside),
            &want,
            &bound,
        );
        for (i, (&g, &c)) in got.iter().zip(&c_full).enumerate() {
            let (r, col) = (i / 25, i % 25);
            if !(1..1 + m).contains(&r) || !(2..2 + n).contains(&col) {
                assert_eq!(g as f64, c, "C[{r}][{col}] outside the block changed");
            }
        }
    }
}

/// `data` in disjoint views of one buffer, each at the aligned offset `GpuVec::packed` gives.
fn packed(gpu: &Gpu, data: &[&[f64]]) -> Vec<GpuVec<f32>> {
    let lens: Vec<usize> = data.iter().map(|d| d.len()).collect();
    let views = GpuVec::<f32>::packed(gpu, &lens).unwrap();
    for (v, d) in views.iter().zip(data) {
        v.write(&as_f32(d)).unwrap();
    }
    views
}

#[test]
fn a_b_and_c_packed_in_one_buffer_match_f64() {
    // The case: A, B and C disjoint views of one buffer (an engine's arena), every
    // form of the odd 17×33·33×5 product with α and β; A and B are left as they were.
    let (m, n, k) = (17, 5, 33);
    for (f, &(ta, tb, form)) in FORMS.iter().enumerate() {
        let shape = Gemm {
            trans_a: ta,
            trans_b: tb,
            alpha: 0.75,
            beta: -1.5,
            ..Gemm::new(m, n, k)
        };
        let seed = 300 + f as u64;
        let (a, b, c0) = (
            randoms(m * k, seed),
            randoms(k * n, seed + 100),
            randoms(m * n, seed + 200),
        );
        let (want, bound) = expected(&shape, &a, &b, &c0);
        for (name, gpu) in both_gpus() {
            let v = packed(gpu, &[&a, &b, &c0]);
            assert!(v[0].buffer() == v[2].buffer(), "one buffer");
            let mut rec = Recorder::new(gpu);
            record_gemm(&mut rec, &shape, v[0].view(), v[1].view(), v[2].view()).unwrap();
            rec.submit().unwrap();
            let got = v[2].read().unwrap();
            assert_within(&format!("packed {form} ({name})"), &got, &want, &bound);
            assert_eq!(v[0].read().unwrap(), as_f32(&a), "A untouched");
            assert_eq!(v[1].read().unwrap(), as_f32(&b), "B untouched");
        }
    }
}

#[test]
fn a_times_a_transposed_of_one_view_writes_c_beside_it_in_the_same_buffer() {
    // XᵀX (TN) and X·Xᵀ (NT) with A and B one view and C in the same buffer: A is bound once
    // (two overlapping read bindings of a buffer the dispatch writes are refused by WebGPU).
    for &(n, k, ta, tb) in &[(70, 100, true, false), (130, 9, false, true)] {
        let x = randoms(n * k, 400 + n as u64);
        let s0 = reference::gemm(n, n, n, &randoms(n * n, 3), &randoms(n * n, 3), false, true);
        let c0 = as_f64(&as_f32(&s0));
        for symmetric in [false, true] {
            let shape = Gemm {
                trans_a: ta,
                trans_b: tb,
                beta: 0.25,
                symmetric,
                ..Gemm::new(n, n, k)
            };
            let (want, bound) = expected(&shape, &x, &x, &c0);
            for (name, gpu) in both_gpus() {
                let v = packed(gpu, &[&x, &c0]);
                let mut rec = Recorder::new(gpu);
                record_gemm(&mut rec, &shape, v[0].view(), v[0].view(), v[1].view()).unwrap();
                rec.submit().unwrap();
                assert_within(
                    &format!("one-view {n}×{n}, k = {k}, symmetric {symmetric} ({name})"),
                    &v[1].read().unwrap(),
                    &want,
                    &bound,
                );
            }
        }
    }
}

#[test]
fn overlapping_a_and_b_are_read_through_one_binding_beside_c() {
    // A = rows 0..50 and B = rows 1..51 of one 51×k X (overlapping views, B one aligned row
    // on), C = A·Bᵀ in the same buffer: C[i][j] = X[i]·X[j + 1].
    for (name, gpu) in both_gpus() {
        let k = (gpu.limits().min_storage_buffer_offset_alignment as usize / 4).max(4);
        let rows = 50;
        let x = randoms((rows + 1) * k, 77);
        let c0 = vec![0.0; rows * rows];
        let v = packed(gpu, &[&x, &c0]);
        let at = v[0].byte_offset();
        let a = curvgpu::BufView::new(v[0].buffer(), at, rows * k);
        let b = curvgpu::BufView::new(v[0].buffer(), at + 4 * k as u64, rows * k);
        let shape = Gemm {
            trans_b: true,
            ..Gemm::new(rows, rows, k)
        };
        let mut rec = Recorder::new(gpu);
        record_gemm(&mut rec, &shape, a, b, v[1].view()).unwrap();
        rec.submit().unwrap();
        let (want, bound) = expected(&shape, &x[..rows * k], &x[k..], &c0);
        assert_within(
            &format!("overlapping A and B ({name})"),
            &v[1].read().unwrap(),
            &want,
            &bound,
        );
    }
}

#[test]
fn c_overlapping_a_or_b_is_refused_naming_both() {
    // BLAS has no in-place product: C over A (the same bytes, or in part) or over B is
    // Error::Overlap naming the operand and `c`, and nothing is recorded.
    use curvgpu::{BufView, Error};
    let gpu = gpu();
    let align = (gpu.limits().min_storage_buffer_offset_alignment as u64).max(64);
    let buffer = gpu
        .device()
        .create_buffer(&curvgpu::wgpu::BufferDescriptor {
            label: Some("arena"),
            size: 4 * align,
            usage: curvgpu::buffer::STORAGE_USAGES,
            mapped_at_creation: false,
        });
    let shape = Gemm::new(2, 4, 3);
    let a = BufView::new(&buffer, 0, 6);
    let b = BufView::new(&buffer, align, 12);
    let c = BufView::new(&buffer, 2 * align, 8);
    let mut rec = Recorder::new(gpu);
    record_gemm(&mut rec, &shape, a, b, c).unwrap();
    let mut rec = Recorder::new(gpu);
    for (c, operand) in [
        (BufView::new(&buffer, 0, 8), "a"),
        (BufView::new(&buffer, align, 8), "b"),
    ] {
        match record_gemm(&mut rec, &shape, a, b, c) {
            Err(Error::Overlap { first, second, .. }) => {
                assert_eq!((first.as_str(), second.as_str()), (operand, "c"))
            }
            other => panic!("expected Overlap {{ {operand}, c }}, got {other:?}"),
        }
    }
    // A·Aᵀ written over A itself.
    let square = BufView::new(&buffer, 0, 4);
    let shape = Gemm {
        trans_b: true,
        ..Gemm::new(2, 2, 2)
    };
    match record_gemm(&mut rec, &shape, square, square, square) {
        Err(Error::Overlap { first, second, .. }) => {
            assert_eq!((first.as_str(), second.as_str()), ("a", "c"))
        }
        other => panic!("expected Overlap {{ a, c }}, got {other:?}"),
    }
    assert!(rec.is_empty(), "a refused product recorded nothing");
}
