//! Runs the page's demos natively with their default settings and prints the results as JSON:
//! the values the browser test holds the WebGPU run to. The adapter comes from
//! `CURVGPU_BACKEND` / `CURVGPU_ADAPTER`, as for the library's tests.

use std::process::ExitCode;
use std::rc::Rc;

fn main() -> ExitCode {
    let run = || -> Result<String, Box<dyn std::error::Error>> {
        let gpu = Rc::new(curvgpu::Gpu::new()?);
        let expected = pollster::block_on(curvgpu_web_demo::run_all(gpu))?;
        Ok(serde_json::to_string_pretty(&expected)?)
    };
    match run() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("web-demo-native: {e}");
            ExitCode::FAILURE
        }
    }
}
