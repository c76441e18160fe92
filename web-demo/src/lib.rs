//! curvgpu in the browser: the three demos of `web-demo/index.html` as plain async Rust
//! (run natively by `web-demo-native` for the browser test's expected values) and, on wasm32,
//! the few `wasm-bindgen` entry points the page calls. Results cross to JavaScript as JSON.

pub mod benchmark;
pub mod optimizers;
pub mod packed;
pub mod transport;

#[cfg(target_arch = "wasm32")]
mod web;

/// Everything one page load runs with default settings: what the browser test compares with
/// the native run.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Expected {
    /// The adapter the run used.
    pub adapter: String,
    /// The finished optimizer race.
    pub optimizers: optimizers::Progress,
    /// Sinkhorn against SNS on each problem.
    pub transport: Vec<transport::TransportReport>,
}

/// Runs the optimizer race to the end and both transport problems with default settings.
pub async fn run_all(gpu: std::rc::Rc<curvgpu::Gpu>) -> curvgpu::Result<Expected> {
    let mut race = optimizers::Race::new(gpu.clone(), optimizers::RaceConfig::default())?;
    let steps = race.config().steps;
    let optimizers = race.advance(steps).await?;
    let mut reports = Vec::new();
    for problem in [transport::Problem::Points, transport::Problem::Images] {
        let config = transport::TransportConfig {
            problem,
            ..Default::default()
        };
        reports.push(transport::run(gpu.clone(), config).await?);
    }
    Ok(Expected {
        adapter: gpu.adapter_info().name.clone(),
        optimizers,
        transport: reports,
    })
}
