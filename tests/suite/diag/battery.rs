//! One battery over every [`Optimizer`]: the same contract for SophiaG, SophiaH, AdaHessian
//! and AdamW. Each optimizer's numbers are checked against its f64 reference in its own
//! module; here the shared behaviour: tensors packed into one buffer step exactly as separate
//! buffers do, overlaps and wrong counts are refused naming the arguments, step numbers are
//! the caller's (a dropped recording changes nothing), checkpoints continue bit for bit, and
//! the finite check names the input list.

use curvgpu::buffer::{Layout, STORAGE_USAGES};
use curvgpu::diag::{
    AdaHessian, AdaHessianConfig, AdamW, AdamWConfig, SophiaG, SophiaGConfig, SophiaH,
    SophiaHConfig, TensorSpec,
};
use curvgpu::{BufView, Error, Gpu, GpuVec, Optimizer, Recorder};

use crate::common::{as_f32, gpu, round_f32, uniform};

/// Tensor lengths of every case: 1, a prime, 2^k ± 1 and one past a vec4.
const LENS: [usize; 4] = [1, 13, 1023, 1025];

/// An optimizer the battery can make, finite check on or off.
trait Case: Optimizer + Sized {
    fn make(gpu: &Gpu, lens: &[usize], check_finite: bool) -> Self;
}

impl Case for SophiaG {
    fn make(gpu: &Gpu, lens: &[usize], check_finite: bool) -> Self {
        let config = SophiaGConfig {
            lr: 1e-2,
            check_finite,
            ..Default::default()
        };
        SophiaG::new_multi(gpu, lens, config).unwrap()
    }
}

impl Case for SophiaH {
    fn make(gpu: &Gpu, lens: &[usize], check_finite: bool) -> Self {
        let config = SophiaHConfig {
            lr: 1e-2,
            check_finite,
            ..Default::default()
        };
        SophiaH::new_multi(gpu, lens, config).unwrap()
    }
}

impl Case for AdaHessian {
    fn make(gpu: &Gpu, lens: &[usize], check_finite: bool) -> Self {
        let specs: Vec<TensorSpec> = lens.iter().map(|&l| TensorSpec::flat(l)).collect();
        let config = AdaHessianConfig {
            check_finite,
            ..Default::default()
        };
        AdaHessian::new_multi(gpu, &specs, config).unwrap()
    }
}

impl Case for AdamW {
    fn make(gpu: &Gpu, lens: &[usize], check_finite: bool) -> Self {
        let config = AdamWConfig {
            check_finite,
            ..Default::default()
        };
        AdamW::new_multi(gpu, lens, config).unwrap()
    }
}

/// Parameters, then each input list, as host data (step `t` of the inputs).
fn data(lists: usize, t: u64) -> Vec<Vec<Vec<f32>>> {
    (0..=lists)
        .map(|k| {
            LENS.iter()
                .enumerate()
                .map(|(i, &n)| {
                    let seed = 1000 * (k as u64) + 100 * t + i as u64;
                    as_f32(&round_f32(&uniform(n, seed, -1.0, 1.0)))
                })
                .collect()
        })
        .collect()
}

/// The lists as separate buffers.
fn separate(gpu: &Gpu, lists: &[Vec<Vec<f32>>]) -> Vec<Vec<GpuVec<f32>>> {
    lists
        .iter()
        .map(|l| l.iter().map(|t| GpuVec::upload(gpu, t).unwrap()).collect())
        .collect()
}

/// Records step `t` with the given lists (params first) through the slice form.
fn record<O: Optimizer>(opt: &mut O, rec: &mut Recorder, t: u64, views: &[Vec<BufView<'_>>]) {
    let inputs: Vec<Vec<BufView>> = views[1..].to_vec();
    opt.record_step_lists(rec, t, &views[0], &inputs).unwrap();
    opt.set_steps(t);
}

fn views_of(lists: &[Vec<GpuVec<f32>>]) -> Vec<Vec<BufView<'_>>> {
    lists
        .iter()
        .map(|l| l.iter().map(GpuVec::view).collect())
        .collect()
}

/// Three steps with every list in its own buffers, and with every list packed into one buffer
/// (an engine's pool): the parameters must come out bit for bit the same, since the packed
/// dispatch runs the same shader code with its read bindings declared writable.
fn packed_steps_equal_separate<O: Case>() {
    let gpu = gpu();
    let lists = O::INPUTS.len();
    let first = data(lists, 0);
    let mut a = O::make(gpu, &LENS, false);
    let mut b = O::make(gpu, &LENS, false);
    let sep = separate(gpu, &first);
    let all: Vec<usize> = (0..=lists).flat_map(|_| LENS).collect();
    let layout = Layout::new::<f32>(gpu.limits(), &all).unwrap();
    let arena = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("arena"),
        size: layout.size(),
        usage: STORAGE_USAGES,
        mapped_at_creation: false,
    });
    let packed: Vec<Vec<BufView>> = layout
        .views(&arena)
        .chunks(LENS.len())
        .map(<[_]>::to_vec)
        .collect();
    let write = |t: u64| {
        let d = data(lists, t);
        for (k, list) in d.iter().enumerate() {
            for (i, v) in list.iter().enumerate() {
                if t == 0 || k > 0 {
                    sep[k][i].write(v).unwrap();
                    let at = packed[k][i].byte_offset();
                    gpu.queue()
                        .write_buffer(&arena, at, bytemuck::cast_slice(v));
                }
            }
        }
    };
    for t in 1..=3 {
        write(if t == 1 { 0 } else { t });
        let mut rec = Recorder::new(gpu);
        record(&mut a, &mut rec, t, &views_of(&sep));
        record(&mut b, &mut rec, t, &packed);
        rec.submit().unwrap();
    }
    let arena_vec: Vec<Vec<f32>> = LENS
        .iter()
        .enumerate()
        .map(|(i, _)| read_view(gpu, &arena, packed[0][i]))
        .collect();
    for (i, t) in sep[0].iter().enumerate() {
        assert_eq!(
            t.read().unwrap(),
            arena_vec[i],
            "{}: tensor {i} packed against separate",
            O::NAME
        );
    }
    // The inputs in the arena are untouched by the steps.
    let d = data(lists, 3);
    for (k, list) in d.iter().enumerate().skip(1) {
        for (i, v) in list.iter().enumerate() {
            assert_eq!(
                &read_view(gpu, &arena, packed[k][i]),
                v,
                "{} input",
                O::NAME
            );
        }
    }
}

fn read_view(gpu: &Gpu, buffer: &wgpu::Buffer, view: BufView<'_>) -> Vec<f32> {
    let words = crate::common::read_buffer_words(gpu, buffer);
    let start = view.byte_offset() as usize / 4;
    words[start..start + view.len()]
        .iter()
        .map(|&w| f32::from_bits(w))
        .collect()
}

/// Parameters overlapping an input, and one input overlapping another where the step writes
/// neither but shares their buffer with the parameters, are refused naming the two.
fn overlaps_are_refused<O: Case>() {
    let gpu = gpu();
    let n = LENS[2];
    let arena = GpuVec::<f32>::zeros(gpu, 4 * n + 64).unwrap();
    let at = |elem: usize| BufView::new(arena.buffer(), 4 * elem as u64, n);
    let mut opt = O::make(gpu, &[n], false);
    for (k, name) in O::INPUTS.iter().enumerate() {
        let mut lists: Vec<Vec<BufView>> = (0..O::INPUTS.len())
            .map(|j| vec![at(n.div_ceil(64) * 64 * (j + 1))])
            .collect();
        lists[k] = vec![at(0)]; // the parameters' bytes
        let mut rec = Recorder::new(gpu);
        match opt.record_step_lists(&mut rec, 1, &[at(0)], &lists) {
            Err(Error::Overlap { first, second, .. }) => {
                assert_eq!(
                    (first.as_str(), second.as_str()),
                    ("params", *name),
                    "{}",
                    O::NAME
                )
            }
            other => panic!(
                "{}: expected Overlap of params and {name}, got {other:?}",
                O::NAME
            ),
        }
        assert!(rec.is_empty(), "{}: nothing recorded", O::NAME);
    }
}

/// A list with a tensor too few or too many is refused naming the list, before anything runs.
fn wrong_counts_are_refused<O: Case>() {
    let gpu = gpu();
    let mut opt = O::make(gpu, &LENS, false);
    let d = separate(gpu, &data(O::INPUTS.len(), 0));
    let views = views_of(&d);
    let names: Vec<&str> = std::iter::once("params")
        .chain(O::INPUTS.iter().copied())
        .collect();
    for (k, name) in names.iter().enumerate() {
        let mut short = views.clone();
        short[k].pop();
        let mut rec = Recorder::new(gpu);
        let inputs: Vec<Vec<BufView>> = short[1..].to_vec();
        match opt.record_step_lists(&mut rec, 1, &short[0], &inputs) {
            Err(Error::CountMismatch {
                argument,
                expected,
                actual,
            }) => assert_eq!((argument, expected, actual), (*name, 4, 3), "{}", O::NAME),
            other => panic!(
                "{}: expected CountMismatch of {name}, got {other:?}",
                O::NAME
            ),
        }
    }
    assert_eq!(opt.steps(), 0, "{}: nothing counted", O::NAME);
}

/// Step 0 is not a step; a recording that is dropped changes nothing; `steps` follows the
/// numbers recorded and the convenience step takes the next one.
fn step_numbers_are_the_callers<O: Case>() {
    let gpu = gpu();
    let lists = O::INPUTS.len();
    let run = |drop_first: bool| -> Vec<Vec<f32>> {
        let d = separate(gpu, &data(lists, 0));
        let mut opt = O::make(gpu, &LENS, false);
        let views = views_of(&d);
        if drop_first {
            let mut rec = Recorder::new(gpu);
            record(&mut opt, &mut rec, 1, &views);
        }
        let mut rec = Recorder::new(gpu);
        record(&mut opt, &mut rec, 1, &views);
        rec.submit().unwrap();
        assert_eq!(opt.steps(), 1);
        d[0].iter().map(|t| t.read().unwrap()).collect()
    };
    assert_eq!(run(true), run(false), "{}: a dropped recording", O::NAME);
    let d = separate(gpu, &data(lists, 0));
    let mut opt = O::make(gpu, &LENS, false);
    let mut rec = Recorder::new(gpu);
    let p = &d[0][..];
    let err = match lists {
        1 => opt.record_step(&mut rec, 0, p, &d[1][..]),
        _ => opt.record_step(&mut rec, 0, p, (&d[1][..], &d[2][..])),
    };
    crate::common::assert_param(err, "step", 0.0);
    let ok = match lists {
        1 => opt.record_step(&mut rec, 7, p, &d[1][..]),
        _ => opt.record_step(&mut rec, 7, p, (&d[1][..], &d[2][..])),
    };
    ok.unwrap();
    assert_eq!(opt.steps(), 7, "{}", O::NAME);
    rec.submit().unwrap();
    match lists {
        1 => opt.step(gpu, p, &d[1][..]),
        _ => opt.step(gpu, p, (&d[1][..], &d[2][..])),
    }
    .unwrap();
    assert_eq!(opt.steps(), 8, "{}", O::NAME);
}

/// A checkpoint taken after two steps and restored into a fresh optimizer continues bit for
/// bit, the step number included.
fn checkpoints_continue_bit_for_bit<O: Case>() {
    let gpu = gpu();
    let lists = O::INPUTS.len();
    let d = separate(gpu, &data(lists, 0));
    let mut a = O::make(gpu, &LENS, false);
    for t in 1..=2 {
        let mut rec = Recorder::new(gpu);
        record(&mut a, &mut rec, t, &views_of(&d));
        rec.submit().unwrap();
    }
    let saved = a.export_state().unwrap();
    let mut b = O::make(gpu, &LENS, false);
    b.import_state(&saved).unwrap();
    assert_eq!(b.steps(), 2, "{}", O::NAME);
    let twin = separate(gpu, &[d[0].iter().map(|t| t.read().unwrap()).collect()]);
    let mut views_b = views_of(&d);
    views_b[0] = twin[0].iter().map(GpuVec::view).collect();
    let mut rec = Recorder::new(gpu);
    record(&mut a, &mut rec, 3, &views_of(&d));
    record(&mut b, &mut rec, 3, &views_b);
    rec.submit().unwrap();
    for (x, y) in d[0].iter().zip(&twin[0]) {
        assert_eq!(x.read().unwrap(), y.read().unwrap(), "{}", O::NAME);
    }
}

/// With the finite check on, a NaN in an input list is reported under that list's name, and
/// the step is not taken.
fn the_finite_check_names_the_input<O: Case>() {
    let gpu = gpu();
    let lists = O::INPUTS.len();
    for (k, name) in O::INPUTS.iter().enumerate() {
        let mut host = data(lists, 0);
        host[k + 1][2][5] = f32::NAN;
        let d = separate(gpu, &host);
        let mut opt = O::make(gpu, &LENS, true);
        let p = &d[0][..];
        let result = match lists {
            1 => opt.step(gpu, p, &d[1][..]),
            _ => opt.step(gpu, p, (&d[1][..], &d[2][..])),
        };
        match result {
            Err(Error::NonFinite {
                argument,
                tensor,
                index,
            }) => assert_eq!((argument, tensor, index), (*name, 2, 5), "{}", O::NAME),
            other => panic!("{}: expected NonFinite in {name}, got {other:?}", O::NAME),
        }
        assert_eq!(opt.steps(), 0, "{}", O::NAME);
    }
}

fn battery<O: Case>() {
    packed_steps_equal_separate::<O>();
    overlaps_are_refused::<O>();
    wrong_counts_are_refused::<O>();
    step_numbers_are_the_callers::<O>();
    checkpoints_continue_bit_for_bit::<O>();
    the_finite_check_names_the_input::<O>();
}

#[test]
fn sophiag_keeps_the_optimizer_contract() {
    battery::<SophiaG>();
}

#[test]
fn sophiah_keeps_the_optimizer_contract() {
    battery::<SophiaH>();
}

#[test]
fn adahessian_keeps_the_optimizer_contract() {
    battery::<AdaHessian>();
}

#[test]
fn adamw_keeps_the_optimizer_contract() {
    battery::<AdamW>();
}
