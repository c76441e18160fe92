//! The one error type every public function returns.

/// Everything that can go wrong in curvgpu: bad arguments are named, device limits are quoted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched the requested backend / name filter.
    #[error("no GPU adapter found ({0})")]
    NoAdapter(String),
    /// `CURVGPU_BACKEND` (or [`crate::GpuOptions::backends`]) named something unknown.
    #[error("unknown backend `{0}`: expected vulkan, gl, metal, dx12 or webgpu")]
    UnknownBackend(String),
    /// The adapter refused to create a device.
    #[error("device request failed: {0}")]
    RequestDevice(String),
    /// A shader module or compute pipeline failed to build.
    #[error("shader `{name}` failed to build: {message}")]
    Shader {
        /// Registry name of the shader, e.g. `diag/sophia.wgsl`.
        name: String,
        /// The validation message from wgpu.
        message: String,
    },
    /// wgpu reported a validation, internal or out-of-memory error.
    #[error("wgpu error during {operation}: {message}")]
    Wgpu {
        /// What curvgpu was doing.
        operation: &'static str,
        /// wgpu's message.
        message: String,
    },
    /// Mapping a buffer for reading failed.
    #[error("buffer mapping failed: {0}")]
    Map(String),
    /// Waiting for the device failed (device lost, timeout).
    #[error("device poll failed: {0}")]
    Poll(String),
    /// An argument has the wrong number of elements.
    #[error("`{argument}` has {actual} elements, expected {expected}")]
    LengthMismatch {
        /// The argument's name.
        argument: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// An argument is empty where at least one element is needed.
    #[error("`{argument}` is empty")]
    Empty {
        /// The argument's name.
        argument: &'static str,
    },
    /// A hyper-parameter is outside its valid range.
    #[error("invalid hyper-parameter `{name}` = {}: must be {requirement}", shortest(*.value))]
    InvalidParameter {
        /// The parameter's name, as in the config struct.
        name: &'static str,
        /// The value given (an f32 parameter widened exactly; printed as the f32 it was).
        value: f64,
        /// The valid range, in words.
        requirement: &'static str,
    },
    /// A list of tensors has the wrong number of entries.
    #[error("`{argument}` lists {actual} tensors, expected {expected}")]
    CountMismatch {
        /// The argument's name.
        argument: &'static str,
        /// The number of tensors required (e.g. one per tensor the optimizer was made for).
        expected: usize,
        /// The number given.
        actual: usize,
    },
    /// Two views one kernel binds overlap where that is not allowed: one of them is written,
    /// or both are read from a buffer the kernel also writes elsewhere.
    #[error("`{first}` and `{second}` overlap in one buffer (bytes {first_bytes:?} and {second_bytes:?}): {why}")]
    Overlap {
        /// The first argument (the caller's name for it, or the kernel's for its own state).
        first: String,
        /// The second argument.
        second: String,
        /// The bytes of the buffer the first binds.
        first_bytes: std::ops::Range<u64>,
        /// The bytes of the buffer the second binds.
        second_bytes: std::ops::Range<u64>,
        /// Why it is refused, and what to pass instead.
        why: String,
    },
    /// A `CURVGPU_*` environment variable holds text it cannot take.
    #[error("environment variable {variable}={value:?}: expected {expected}")]
    Environment {
        /// The variable.
        variable: &'static str,
        /// The text it held.
        value: String,
        /// What it takes, in words.
        expected: &'static str,
    },
    /// The device grants less than curvgpu's kernels need (see [`crate::gpu::REQUIRED_LIMITS`]).
    #[error("the device grants `{limit}` = {granted}, curvgpu needs {required}")]
    DeviceLimit {
        /// The name of the `wgpu::Limits` field.
        limit: &'static str,
        /// What curvgpu needs (a minimum, or for alignments a maximum), in words with the value.
        required: String,
        /// What the device granted.
        granted: u64,
    },
    /// A host allocation of the given size failed (checked before anything is allocated).
    #[error("`{argument}` needs {bytes} bytes of host memory, which could not be allocated")]
    HostMemory {
        /// The argument whose size asked for it.
        argument: &'static str,
        /// The bytes requested.
        bytes: u64,
    },
    /// A tensor shape does not fit the operation.
    #[error("invalid shape for `{argument}`: {message}")]
    Shape {
        /// The argument's name.
        argument: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A size exceeds what the device granted.
    #[error("`{argument}` needs {requested}, past the device limit `{limit}` = {max}")]
    TooLarge {
        /// The argument's name.
        argument: &'static str,
        /// The amount requested (bytes, or workgroups for dispatch limits).
        requested: u64,
        /// The name of the `wgpu::Limits` field that was hit.
        limit: &'static str,
        /// The granted value of that limit.
        max: u64,
    },
    /// A [`crate::GpuVec`] created on another [`crate::Gpu`] was passed in.
    #[error("`{argument}` belongs to another device")]
    WrongDevice {
        /// The argument's name.
        argument: &'static str,
    },
    /// A caller's buffer lacks a usage flag the kernel needs.
    #[error("`{argument}` lacks buffer usage {missing:?}")]
    MissingUsage {
        /// The argument's name.
        argument: &'static str,
        /// The usage flags missing.
        missing: wgpu::BufferUsages,
    },
    /// A buffer view does not fit inside its buffer, or starts at a misaligned offset.
    #[error("`{argument}`: {message}")]
    BadView {
        /// The argument's name.
        argument: &'static str,
        /// What is wrong with the view.
        message: String,
    },
    /// The opt-in finite check found NaN or ±inf.
    #[error("`{argument}` (tensor {tensor}) holds a non-finite value at index {index}")]
    NonFinite {
        /// The argument's name.
        argument: &'static str,
        /// Which tensor of a multi-tensor list (0 for a single tensor).
        tensor: usize,
        /// The first offending index within that tensor.
        index: usize,
    },
    /// A tensor that must be non-negative (masses, costs) holds a value below zero.
    #[error("`{argument}` (tensor {tensor}) holds a negative value at index {index}")]
    Negative {
        /// The argument's name.
        argument: &'static str,
        /// Which tensor of a multi-tensor list (0 for a single tensor).
        tensor: usize,
        /// The first offending index within that tensor.
        index: usize,
    },
    /// Histograms that must carry mass carry none, or two that must carry the same mass do not.
    #[error("{message}")]
    Mass {
        /// What is wrong, with the totals.
        message: String,
    },
    /// An iterative method's denominator vanished or turned negative: the operator is not
    /// symmetric positive definite (CG's pᵀAp ≤ 0) or the data are not finite.
    #[error("{method} broke down at iteration {iteration}: {message}")]
    Breakdown {
        /// The method, e.g. `cg`.
        method: &'static str,
        /// The iteration at which it happened (0-based).
        iteration: usize,
        /// What was observed.
        message: String,
    },
    /// A matrix that must be symmetric positive definite is not: its Cholesky factorisation
    /// met a pivot that is not positive and finite.
    #[error("`{argument}` factor {factor} is not symmetric positive definite: Cholesky pivot {pivot} is {value}")]
    NotPositiveDefinite {
        /// The argument's name.
        argument: &'static str,
        /// Which matrix of the batch (0-based).
        factor: usize,
        /// The failing pivot's row (0-based).
        pivot: usize,
        /// The pivot's value after the updates before it (≤ 0, NaN or ±inf).
        value: f32,
    },
    /// A host-side iteration (e.g. the tridiagonal QL eigen-solver) did not converge.
    #[error("{what} did not converge within {iterations} iterations")]
    NoConvergence {
        /// What was iterating.
        what: &'static str,
        /// The iteration budget spent.
        iterations: usize,
    },
    /// A checkpoint does not match the optimizer it is restored into.
    #[error("state mismatch: {0}")]
    State(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// `value` as written: an f64 that is exactly an f32 prints as that f32's shortest decimal
/// (`-0.001`, not `-0.0010000000474974513`), anything else as the f64.
fn shortest(value: f64) -> String {
    let single = value as f32;
    if single as f64 == value || value.is_nan() {
        format!("{single}")
    } else {
        format!("{value}")
    }
}

impl Error {
    pub(crate) fn param(name: &'static str, value: f64, requirement: &'static str) -> Self {
        Error::InvalidParameter {
            name,
            value,
            requirement,
        }
    }
}
