//! The kernel table of `curvgpu bench`, runnable wherever the crate runs (the browser
//! included): the adapter's roofline, then every chosen kernel at every size and every chosen
//! fixed problem, each as a fraction of that roofline, with the clock's resolution beside
//! them so a figure made of a few clock steps is marked as such.

use std::fmt;

use super::roofline::{self, Roofline};
use super::{kernels, problems, time_runs_async, timer, Runs, TimingMethod};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::record::Recorder;

/// Largest log2 size the table runs (2^28 f32 is 1 GiB per vector).
pub const MAX_LOG2_SIZE: u32 = 28;

/// What to run.
#[derive(Clone, Debug)]
pub struct TableOptions {
    /// log2 of the element counts every per-element kernel runs at, each ≤ [`MAX_LOG2_SIZE`];
    /// the largest also sizes the roofline's copy (2^24 when empty).
    pub log2_sizes: Vec<u32>,
    /// Timed runs per kernel and size; the median is reported.
    pub reps: usize,
    /// Names from [`kernels::KERNELS`], [`problems::PROBLEMS`] and `other_rows`; empty runs
    /// them all. A name none of them knows is an error.
    pub kernels: Vec<String>,
    /// Rows the caller times itself after the table (the CLI's solver rows): `kernels` may
    /// name them, and naming only those measures the roofline alone.
    pub other_rows: Vec<&'static str>,
    /// Time on GPU timestamps where the adapter has them (else the host clock).
    pub use_timestamps: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            log2_sizes: vec![16, 18, 20, 22, 24],
            reps: 10,
            kernels: Vec::new(),
            other_rows: Vec::new(),
            use_timestamps: true,
        }
    }
}

impl TableOptions {
    /// The per-element kernels and the fixed problems these options choose, in table order.
    pub fn chosen(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let wanted = |k: &&str| self.kernels.is_empty() || self.kernels.iter().any(|o| o == k);
        let names = kernels::KERNELS.iter().copied().filter(wanted).collect();
        let fixed = problems::PROBLEMS.iter().copied().filter(wanted).collect();
        (names, fixed)
    }

    /// Timed cases these options make: every chosen kernel at every size, and every chosen
    /// fixed problem (one [`Progress::Next`] each).
    pub fn cases(&self) -> usize {
        let (names, fixed) = self.chosen();
        names.len() * self.log2_sizes.len() + fixed.len()
    }
}

/// What one run of a row must do, and so which roofline it is read against.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Work {
    /// Bytes that must move: read against the copy roofline, rate in GB/s.
    Bytes(f64),
    /// Floating-point operations (an FMA counts 2): read against the FMA roofline, rate in
    /// GFLOP/s.
    Flops(f64),
}

impl Work {
    /// The rate's unit: `GB/s` or `GFLOP/s`.
    pub fn unit(self) -> &'static str {
        match self {
            Work::Bytes(_) => "GB/s",
            Work::Flops(_) => "GFLOP/s",
        }
    }
}

/// One kernel at one size, or one fixed problem.
#[derive(Clone, Debug)]
pub struct KernelRow {
    /// e.g. `sophiag_step` or `gemm_1024`.
    pub kernel: String,
    /// Elements (per-element kernels) or the problem's size figure.
    pub n: usize,
    /// The work of one run.
    pub work: Work,
    /// Median milliseconds per run.
    pub median_ms: f64,
    /// GB/s for [`Work::Bytes`], GFLOP/s for [`Work::Flops`].
    pub rate: f64,
    /// `rate` over the matching roofline (copy GB/s or FMA GFLOP/s).
    pub fraction: f64,
    /// The median is under [`timer::COARSE_STEPS`] steps of the table's clock: the figure is
    /// a count of clock steps more than a time. [`KernelRow::new`] leaves it false.
    pub coarse: bool,
}

impl KernelRow {
    /// A row from its work and median, against `roofline`. A median of 0 (a coarse clock that
    /// did not tick) gives a NaN rate and fraction, which JSON writes as `null`.
    pub fn new(
        kernel: impl Into<String>,
        n: usize,
        work: Work,
        median_ms: f64,
        roofline: &Roofline,
    ) -> Self {
        let (amount, roof) = match work {
            Work::Bytes(b) => (b, roofline.copy_gbps),
            Work::Flops(f) => (f, roofline.fma_gflops),
        };
        // A run inside one step of a coarse clock measures 0 ms: no rate, rather than ∞.
        let rate = if median_ms > 0.0 {
            amount / (median_ms * 1e-3) / 1e9
        } else {
            f64::NAN
        };
        KernelRow {
            kernel: kernel.into(),
            n,
            work,
            median_ms,
            rate,
            fraction: rate / roof,
            coarse: false,
        }
    }
}

/// What [`kernel_table_async`] reports as it goes.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// The roofline is measured; rows follow.
    Roofline(&'a Roofline),
    /// About to allocate and time this (e.g. `sophiag_step n=2^20`, `gemm_1024`).
    Next(&'a str),
    /// A finished row (its `coarse` flag from the clock's step known so far).
    Row(&'a KernelRow),
}

/// The roofline and every row, with how they were timed.
#[derive(Clone, Debug)]
pub struct KernelTable {
    /// The adapter measured.
    pub adapter: wgpu::AdapterInfo,
    /// Its copy and FMA roofline, measured first in the same run.
    pub roofline: Roofline,
    /// How the rows were timed.
    pub timing: TimingMethod,
    /// The step of the rows' clock in nanoseconds; `None` when finer than 1 µs or not
    /// detectable (see [`timer`]). Chrome without `--enable-webgpu-developer-features`:
    /// 65,536 ns.
    pub timer_resolution_ns: Option<f64>,
    /// Timed runs per row.
    pub reps: usize,
    /// Rows in order: per-element kernels by [`kernels::KERNELS`] then size, then fixed
    /// problems by [`problems::PROBLEMS`].
    pub rows: Vec<KernelRow>,
}

impl KernelTable {
    /// The rows read against the copy roofline.
    pub fn bandwidth_rows(&self) -> impl Iterator<Item = &KernelRow> {
        self.rows
            .iter()
            .filter(|r| matches!(r.work, Work::Bytes(_)))
    }

    /// The rows read against the FMA roofline.
    pub fn compute_rows(&self) -> impl Iterator<Item = &KernelRow> {
        self.rows
            .iter()
            .filter(|r| matches!(r.work, Work::Flops(_)))
    }

    /// The bandwidth row of `kernel` at its largest size.
    pub fn largest(&self, kernel: &str) -> Option<&KernelRow> {
        self.bandwidth_rows()
            .filter(|r| r.kernel == kernel)
            .max_by_key(|r| r.n)
    }

    /// (n, how many times faster the fused `sophiag_step` is than `sophiag_step_unfused`) at
    /// the largest size both ran at.
    pub fn fused_speedup(&self) -> Option<(usize, f64)> {
        match (
            self.largest("sophiag_step"),
            self.largest("sophiag_step_unfused"),
        ) {
            (Some(f), Some(u)) if f.n == u.n => Some((f.n, u.median_ms / f.median_ms)),
            _ => None,
        }
    }
}

impl KernelTable {
    /// For every `_packed` row with its unpacked twin at the same largest size: (the packed
    /// row's name, n, packed median / unpacked median), the cost of views sharing a buffer.
    pub fn packed_slowdowns(&self) -> Vec<(&str, usize, f64)> {
        let mut out = Vec::new();
        for name in kernels::KERNELS {
            let Some(base) = name.strip_suffix("_packed") else {
                continue;
            };
            if let (Some(p), Some(u)) = (self.largest(name), self.largest(base)) {
                if p.n == u.n {
                    out.push((p.kernel.as_str(), p.n, p.median_ms / u.median_ms));
                }
            }
        }
        out
    }
}

/// One table of the text: a header (the first column, the work, the rate and the roofline
/// column's names), then a row per entry, coarse ones ending in `*`.
fn write_section<'r>(
    f: &mut fmt::Formatter<'_>,
    [first, work, rate, roof]: [&str; 4],
    rows: impl Iterator<Item = &'r KernelRow>,
) -> fmt::Result {
    writeln!(
        f,
        "{first:<26} {:>10} {work:>12} {:>11} {rate:>9} {roof:>9}",
        "n", "median ms"
    )?;
    for r in rows {
        let amount = match r.work {
            Work::Bytes(bytes) => format!("{bytes:>12.0}"),
            Work::Flops(flops) => format!("{flops:>12.3e}"),
        };
        writeln!(
            f,
            "{:<26} {:>10} {amount} {:>11.3} {:>9.2} {:>9.2}{}",
            r.kernel,
            r.n,
            r.median_ms,
            r.rate,
            r.fraction,
            if r.coarse { " *" } else { "" }
        )?;
    }
    Ok(())
}

/// The text `curvgpu bench` prints: adapter, roofline, the bandwidth and compute tables, the
/// fused speedup and the targets. Coarse rows end in `*`, explained below the tables.
impl fmt::Display for KernelTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roof = &self.roofline;
        let best = roof
            .copy_shapes
            .iter()
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
            .map_or("", |s| s.name.as_str());
        writeln!(
            f,
            "adapter: {} — {:?} / {:?} — timing: {}",
            self.adapter.name,
            self.adapter.backend,
            self.adapter.device_type,
            self.timing.as_str()
        )?;
        writeln!(
            f,
            "roofline: copy {:.2} GB/s ({best}), FMA {:.1} GFLOP/s",
            roof.copy_gbps, roof.fma_gflops
        )?;
        write_section(
            f,
            ["kernel", "bytes", "GB/s", "roofline"],
            self.bandwidth_rows(),
        )?;
        if self.compute_rows().next().is_some() {
            write_section(
                f,
                ["problem", "flops", "GFLOP/s", "FMA roof"],
                self.compute_rows(),
            )?;
        }
        if let Some(step) = self.timer_resolution_ns {
            let coarse = self.rows.iter().any(|r| r.coarse);
            writeln!(
                f,
                "timer resolution: {:.1} µs{}",
                step * 1e-3,
                if coarse {
                    format!(
                        "; * median under {} steps of it, so coarse",
                        timer::COARSE_STEPS
                    )
                } else {
                    String::new()
                }
            )?;
        }
        if let Some((n, x)) = self.fused_speedup() {
            writeln!(f, "fused sophiag_step is {x:.2}× faster than sophiag_step_unfused at n = {n} (target ≥ 2×)")?;
        }
        for (name, n, x) in self.packed_slowdowns() {
            let base = name.strip_suffix("_packed").unwrap_or(name);
            writeln!(
                f,
                "{name} at n = {n}: {x:.2}× the time of {base} (views in one buffer)"
            )?;
        }
        for k in ["sophiag_step", "adahessian_step"] {
            if let Some(r) = self.largest(k) {
                writeln!(
                    f,
                    "{k} at n = {}: {:.2} of the copy roofline (target ≥ 0.80)",
                    r.n, r.fraction
                )?;
            }
        }
        Ok(())
    }
}

/// Measures the roofline, then every kernel and fixed problem `options` choose, calling
/// `progress` as it goes (the browser can draw rows as they come). Never blocks: on the web
/// every wait is a yield to the browser.
///
/// Errors: a size over [`MAX_LOG2_SIZE`], no known name in `options.kernels`, and whatever
/// allocating or running a kernel raises.
pub async fn kernel_table_async(
    gpu: &Gpu,
    options: &TableOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<KernelTable> {
    let (names, fixed) = options.chosen();
    let known = |k: &str| {
        kernels::KERNELS.contains(&k)
            || problems::PROBLEMS.contains(&k)
            || options.other_rows.contains(&k)
    };
    if let Some(unknown) = options.kernels.iter().find(|k| !known(k)) {
        return Err(Error::Shape {
            argument: "kernels",
            message: format!(
                "no row is named {unknown:?}; known: {:?}, {:?} and {:?}",
                kernels::KERNELS,
                problems::PROBLEMS,
                options.other_rows
            ),
        });
    }
    if let Some(&bad) = options.log2_sizes.iter().find(|&&s| s > MAX_LOG2_SIZE) {
        return Err(Error::param("log2_sizes", bad as f64, "at most 28"));
    }
    let largest = 1usize << options.log2_sizes.iter().copied().max().unwrap_or(24);
    let reps = options.reps.max(1);
    let timing = if options.use_timestamps && gpu.has_timestamps() {
        TimingMethod::GpuTimestamps
    } else {
        TimingMethod::WallClock
    };
    let mut stamps = Vec::new();
    let roofline = roofline::measure_pooling(gpu, largest, reps.clamp(3, 10), &mut stamps).await?;
    progress(Progress::Roofline(&roofline));
    let period_ns = gpu.queue().get_timestamp_period() as f64;
    // The roofline always times on timestamps where there are any, so its stamps are the
    // rows' clock too, and a wall clock is measured once.
    let wall_step = match timing {
        TimingMethod::WallClock => timer::wall_clock_resolution_ns(),
        TimingMethod::GpuTimestamps => None,
    };
    let step = |stamps: &[u64]| match timing {
        TimingMethod::GpuTimestamps => timer::timestamp_resolution_ns(stamps, period_ns),
        TimingMethod::WallClock => wall_step,
    };
    let use_timestamps = timing == TimingMethod::GpuTimestamps;
    let mut rows = Vec::new();
    for name in &names {
        for &s in &options.log2_sizes {
            let n = 1usize << s;
            progress(Progress::Next(&format!("{name} n=2^{s}")));
            let Some(mut case) = kernels::case(gpu, name, n)? else {
                continue;
            };
            let median_ms = time(gpu, reps, use_timestamps, &mut case, &mut stamps).await?;
            let bytes = kernels::bytes_per_element(name).unwrap_or(f64::NAN) * n as f64;
            let row = KernelRow::new(*name, n, Work::Bytes(bytes), median_ms, &roofline);
            finish(row, step(&stamps), &mut rows, &mut progress);
        }
    }
    for &name in &fixed {
        progress(Progress::Next(name));
        let Some((mut case, work)) = problems::problem_async(gpu, name).await? else {
            continue;
        };
        let median_ms = time(gpu, reps, use_timestamps, &mut case, &mut stamps).await?;
        if let Some(flops) = work.flops {
            let row = KernelRow::new(name, work.n, Work::Flops(flops), median_ms, &roofline);
            finish(row, step(&stamps), &mut rows, &mut progress);
        }
        if let Some(bytes) = work.bytes {
            let row = KernelRow::new(name, work.n, Work::Bytes(bytes), median_ms, &roofline);
            finish(row, step(&stamps), &mut rows, &mut progress);
        }
    }
    // The step from every stamp may be finer than the one an early row was flagged against.
    let timer_resolution_ns = step(&stamps);
    for r in &mut rows {
        r.coarse = timer::is_coarse(r.median_ms, timer_resolution_ns);
    }
    Ok(KernelTable {
        adapter: gpu.adapter_info().clone(),
        roofline,
        timing,
        timer_resolution_ns,
        reps,
        rows,
    })
}

/// Times a case, keeps its stamps for the clock's step and returns its median.
async fn time(
    gpu: &Gpu,
    reps: usize,
    use_timestamps: bool,
    case: &mut kernels::Case,
    stamps: &mut Vec<u64>,
) -> Result<f64> {
    let runs: Runs = time_runs_async(gpu, reps, use_timestamps, |rec: &mut Recorder| {
        case.record(rec)
    })
    .await?;
    stamps.extend_from_slice(&runs.stamps);
    Ok(runs.median_ms())
}

/// Flags a finished row against the clock's step so far, reports and keeps it.
fn finish(
    mut row: KernelRow,
    step: Option<f64>,
    rows: &mut Vec<KernelRow>,
    progress: &mut impl FnMut(Progress<'_>),
) {
    row.coarse = timer::is_coarse(row.median_ms, step);
    progress(Progress::Row(&row));
    rows.push(row);
}

/// Blocking form of [`kernel_table_async`].
#[cfg(not(target_arch = "wasm32"))]
pub fn kernel_table(
    gpu: &Gpu,
    options: &TableOptions,
    progress: impl FnMut(Progress<'_>),
) -> Result<KernelTable> {
    pollster::block_on(kernel_table_async(gpu, options, progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One device for both tests: creating two at once from two test threads trips a panic
    /// inside wgpu's GL probing.
    fn gpu() -> &'static Gpu {
        static GPU: std::sync::OnceLock<Gpu> = std::sync::OnceLock::new();
        GPU.get_or_init(|| Gpu::new().expect("a wgpu adapter (install mesa-vulkan-drivers)"))
    }

    fn options(kernels: &[&str], use_timestamps: bool) -> TableOptions {
        TableOptions {
            log2_sizes: vec![10, 12],
            reps: 3,
            kernels: kernels.iter().map(|k| k.to_string()).collect(),
            use_timestamps,
            ..Default::default()
        }
    }

    #[test]
    fn the_table_has_a_row_per_case_in_order() -> Result<()> {
        let gpu = gpu();
        for use_timestamps in [true, false] {
            let options = options(&["dot", "sophiag_step"], use_timestamps);
            let mut events = Vec::new();
            let table = kernel_table(gpu, &options, |p| {
                events.push(match p {
                    Progress::Roofline(_) => "roofline".to_string(),
                    Progress::Next(what) => format!("next {what}"),
                    Progress::Row(r) => format!("row {} {}", r.kernel, r.n),
                })
            })?;
            assert_eq!(options.cases(), 4);
            let expected = [
                "roofline",
                "next sophiag_step n=2^10",
                "row sophiag_step 1024",
                "next sophiag_step n=2^12",
                "row sophiag_step 4096",
                "next dot n=2^10",
                "row dot 1024",
                "next dot n=2^12",
                "row dot 4096",
            ];
            assert_eq!(events, expected);
            let timed = use_timestamps && gpu.has_timestamps();
            let method = if timed {
                TimingMethod::GpuTimestamps
            } else {
                TimingMethod::WallClock
            };
            assert_eq!(table.timing, method);
            assert_eq!(table.rows.len(), 4);
            for r in &table.rows {
                assert!(r.median_ms > 0.0 && r.rate > 0.0, "{r:?}");
                let Work::Bytes(bytes) = r.work else {
                    panic!("{r:?} is a bandwidth row");
                };
                let per = kernels::bytes_per_element(&r.kernel).unwrap_or(f64::NAN);
                assert_eq!(bytes, per * r.n as f64);
                // The rate and fraction follow from the median by definition: equal to
                // rounding.
                let rate = bytes / (r.median_ms * 1e-3) / 1e9;
                assert!((r.rate - rate).abs() <= 1e-12 * rate, "{r:?}");
                let fraction = rate / table.roofline.copy_gbps;
                assert!((r.fraction - fraction).abs() <= 1e-12 * fraction, "{r:?}");
            }
            if gpu.adapter_info().device_type == wgpu::DeviceType::Cpu {
                // Lavapipe's timestamps and the host clock both count nanoseconds.
                assert_eq!(table.timer_resolution_ns, None);
                assert!(table.rows.iter().all(|r| !r.coarse));
            }
            let text = table.to_string();
            assert!(
                text.contains(&format!("timing: {}", method.as_str())),
                "{text}"
            );
        }
        Ok(())
    }

    #[test]
    fn packed_rows_sit_beside_their_twins_with_the_same_bytes() -> Result<()> {
        let gpu = gpu();
        let twins = [
            "sophiag_step",
            "adahessian_step",
            "adamw_step",
            "dot",
            "poisson2d_apply",
        ];
        let mut names: Vec<String> = twins.iter().map(|k| format!("{k}_packed")).collect();
        names.extend(twins.iter().map(|k| k.to_string()));
        let options = TableOptions {
            kernels: names,
            ..options(&[], true)
        };
        let table = kernel_table(gpu, &options, |_| {})?;
        let rows: Vec<(&str, usize)> = table
            .rows
            .iter()
            .map(|r| (r.kernel.as_str(), r.n))
            .collect();
        let mut expected = Vec::new();
        for k in twins {
            for name in [k.to_string(), format!("{k}_packed")] {
                for n in [1024, 4096] {
                    expected.push((name.clone(), n));
                }
            }
        }
        let expected: Vec<(&str, usize)> = expected.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(rows, expected);
        for r in &table.rows {
            assert!(r.median_ms > 0.0 && r.rate > 0.0, "{r:?}");
            let base = r.kernel.strip_suffix("_packed").unwrap_or(&r.kernel);
            assert_eq!(
                kernels::bytes_per_element(&r.kernel),
                kernels::bytes_per_element(base),
                "{r:?}"
            );
        }
        let slowdowns = table.packed_slowdowns();
        assert_eq!(slowdowns.len(), twins.len());
        assert!(slowdowns.iter().all(|&(_, n, x)| n == 4096 && x > 0.0));
        assert_eq!(kernels::bytes_per_element("sophiah_step_packed"), None);
        Ok(())
    }

    #[test]
    fn bad_options_are_typed_errors() -> Result<()> {
        let gpu = gpu();
        let unknown = kernel_table(gpu, &options(&["nope"], true), |_| {});
        assert!(
            matches!(
                unknown,
                Err(Error::Shape {
                    argument: "kernels",
                    ..
                })
            ),
            "{unknown:?}"
        );
        // A misspelt name among known ones is refused too, not skipped.
        let typo = kernel_table(gpu, &options(&["dot", "dott"], true), |_| {});
        assert!(
            matches!(&typo, Err(Error::Shape { argument: "kernels", message }) if message.contains("\"dott\"")),
            "{typo:?}"
        );
        // Rows the caller times itself are known: naming only those measures the roofline.
        let other = TableOptions {
            other_rows: vec!["cg_iteration_poisson2d_1024"],
            ..options(&["cg_iteration_poisson2d_1024"], true)
        };
        let table = kernel_table(gpu, &other, |_| {})?;
        assert!(table.rows.is_empty() && table.roofline.copy_gbps > 0.0);
        let mut big = options(&["dot"], true);
        big.log2_sizes = vec![12, MAX_LOG2_SIZE + 1];
        let big = kernel_table(gpu, &big, |_| {});
        assert!(
            matches!(
                big,
                Err(Error::InvalidParameter {
                    name: "log2_sizes",
                    ..
                })
            ),
            "{big:?}"
        );
        Ok(())
    }
}
