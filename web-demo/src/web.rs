//! The page's entry points. State lives in thread-locals (a page has one thread), so every
//! entry point is a free `async fn` whose future owns what it needs, as wasm-bindgen requires.

use std::cell::RefCell;
use std::rc::Rc;

use curvgpu::{Gpu, GpuOptions};
use wasm_bindgen::prelude::*;

use crate::benchmark::{self, BenchConfig};
use crate::optimizers::{Race, RaceConfig};
use crate::transport::{self, TransportConfig};

thread_local! {
    static GPU: RefCell<Option<Rc<Gpu>>> = const { RefCell::new(None) };
    static RACE: RefCell<Option<Race>> = const { RefCell::new(None) };
}

fn js_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

fn gpu() -> Result<Rc<Gpu>, JsError> {
    GPU.with_borrow(|g| g.clone())
        .ok_or_else(|| JsError::new("call connect() first"))
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, JsError> {
    serde_json::to_string(value).map_err(js_error)
}

fn config<T: serde::de::DeserializeOwned + Default>(text: &str) -> Result<T, JsError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(text).map_err(|e| JsError::new(&format!("bad configuration: {e}")))
}

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Opens the browser's WebGPU adapter and device; returns the adapter's description (JSON).
#[wasm_bindgen]
pub async fn connect() -> Result<String, JsError> {
    let options = GpuOptions {
        backends: Some(curvgpu::gpu::parse_backend("webgpu").map_err(js_error)?),
        ..Default::default()
    };
    let gpu = Gpu::new_async(options).await.map_err(js_error)?;
    // The browser reports shader errors only asynchronously: ask once, up front, so a shader
    // its compiler rejects is named here instead of surfacing as an invalid pipeline later.
    curvgpu::shader::check_shaders_async(&gpu)
        .await
        .map_err(js_error)?;
    // Views sharing a buffer are bound through variants with their read bindings declared
    // read_write; the browser's compiler may see those differently, so it checks them too.
    curvgpu::kernel::check_promoted_async(&gpu, &curvgpu::kernels())
        .await
        .map_err(js_error)?;
    let info = gpu.adapter_info().clone();
    let description = serde_json::json!({
        "name": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "driver": info.driver,
        "timestamps": gpu.has_timestamps(),
    });
    GPU.set(Some(Rc::new(gpu)));
    json(&description)
}

/// The default settings of the three demos (JSON), for the page's controls.
#[wasm_bindgen]
pub fn defaults() -> Result<String, JsError> {
    json(&serde_json::json!({
        "optimizers": RaceConfig::default(),
        "transport": TransportConfig::default(),
        "bench": BenchConfig::default(),
    }))
}

/// Starts a new optimizer race (JSON settings; empty for the defaults).
#[wasm_bindgen]
pub fn race_start(settings: &str) -> Result<(), JsError> {
    let race = Race::new(gpu()?, config(settings)?).map_err(js_error)?;
    RACE.set(Some(race));
    Ok(())
}

/// Takes `steps` more steps of the race; returns every loss so far (JSON `Progress`).
#[wasm_bindgen]
pub async fn race_advance(steps: usize) -> Result<String, JsError> {
    let mut race = RACE
        .take()
        .ok_or_else(|| JsError::new("call race_start() first"))?;
    let progress = race.advance(steps).await;
    RACE.set(Some(race));
    json(&progress.map_err(js_error)?)
}

/// Sinkhorn against SNS (JSON settings; empty for the defaults); returns a `TransportReport`.
#[wasm_bindgen]
pub async fn transport_run(settings: &str) -> Result<String, JsError> {
    let report = transport::run(gpu()?, config(settings)?)
        .await
        .map_err(js_error)?;
    json(&report)
}

/// One optimizer's steps with parameters and gradients in one buffer against separate buffers
/// (JSON `PackedCheck`).
#[wasm_bindgen]
pub async fn packed_check() -> Result<String, JsError> {
    let gpu = gpu()?;
    json(&crate::packed::run(&gpu, 1027).await.map_err(js_error)?)
}

/// `curvgpu bench`'s table on this adapter (JSON settings; empty for the defaults).
#[wasm_bindgen]
pub async fn bench_run(settings: &str) -> Result<String, JsError> {
    let table = benchmark::run(gpu()?, config(settings)?)
        .await
        .map_err(js_error)?;
    json(&table)
}
