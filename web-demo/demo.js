// The page: asks the wasm build of curvgpu for results and draws them. `?test` runs every demo
// once with its defaults and publishes the results on `window.curvgpuResult` for the browser
// test (which compares them with the native run).
import init, * as demo from "./pkg/curvgpu_web_demo.js";

const COLORS = { SophiaG: "#d1495b", AdaHessian: "#00798c", AdamW: "#edae49", sinkhorn: "#30638e", sns: "#d1495b" };
const testMode = new URLSearchParams(location.search).has("test");
const $ = (id) => document.getElementById(id);

// A number for a table cell; null (JSON's NaN/∞, e.g. a rate from a clock that did not tick) as a dash.
const fmt = (x, digits) => (x === null || x === undefined || !isFinite(x) ? "—" : x.toFixed(digits));

// One demo at a time: the page's wasm state (the race, the device queue) is shared.
let busy = false;
async function exclusive(run) {
  if (busy) return undefined;
  busy = true;
  document.querySelectorAll("button").forEach((b) => (b.disabled = true));
  try {
    return await run();
  } finally {
    busy = false;
    document.querySelectorAll("button").forEach((b) => (b.disabled = false));
  }
}

function showUnavailable(message) {
  $("unavailable").hidden = false;
  $("unavailable").textContent = message;
  $("adapter").textContent = "";
  for (const id of ["optimizers", "transport", "bench"]) $(id).hidden = true;
}

function table(el, header, rows) {
  el.innerHTML = "";
  const tr = (cells, tag) => {
    const r = document.createElement("tr");
    for (const c of cells) {
      const d = document.createElement(tag);
      d.textContent = c;
      r.appendChild(d);
    }
    el.appendChild(r);
  };
  tr(header, "th");
  rows.forEach((row) => tr(row, "td"));
}

// Lines on a log-scale y axis: series = [{name, color, points: [[x, y], …]}].
function plotLog(canvas, series, xLabel, yLabel) {
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 60, R = 12, T = 14, B = 40;
  ctx.clearRect(0, 0, W, H);
  const pts = series.flatMap((s) => s.points).filter(([, y]) => y > 0 && isFinite(y));
  if (pts.length === 0) return;
  const xMax = Math.max(1, ...pts.map(([x]) => x));
  let lo = Math.floor(Math.log10(Math.min(...pts.map(([, y]) => y))));
  let hi = Math.ceil(Math.log10(Math.max(...pts.map(([, y]) => y))));
  if (hi === lo) hi = lo + 1;
  const sx = (x) => L + (x / xMax) * (W - L - R);
  const sy = (y) => T + ((hi - Math.log10(y)) / (hi - lo)) * (H - T - B);
  ctx.strokeStyle = "#eceef3"; ctx.fillStyle = "#5a6275"; ctx.font = "11px system-ui";
  for (let e = lo; e <= hi; e++) {
    ctx.beginPath(); ctx.moveTo(L, sy(10 ** e)); ctx.lineTo(W - R, sy(10 ** e)); ctx.stroke();
    ctx.fillText(`1e${e}`, 8, sy(10 ** e) + 4);
  }
  for (let k = 0; k <= 4; k++) {
    const x = Math.round((xMax * k) / 4);
    ctx.fillText(String(x), sx(x) - 8, H - B + 16);
  }
  ctx.fillText(xLabel, W / 2 - 30, H - 6);
  ctx.save(); ctx.translate(12, H / 2 + 30); ctx.rotate(-Math.PI / 2); ctx.fillText(yLabel, 0, 0); ctx.restore();
  for (const s of series) {
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.beginPath();
    s.points.filter(([, y]) => y > 0 && isFinite(y)).forEach(([x, y], i) => (i ? ctx.lineTo(sx(x), sy(y)) : ctx.moveTo(sx(x), sy(y))));
    ctx.stroke();
    if (s.marks) {
      ctx.fillStyle = s.color;
      for (const [x, y] of s.points) if (y > 0) ctx.fillRect(sx(x) - 2, sy(y) - 2, 4, 4);
    }
  }
}

async function runOptimizers() {
  const defaults = JSON.parse(demo.defaults()).optimizers;
  demo.race_start("");
  let progress;
  $("loss-legend").innerHTML = ["SophiaG", "AdaHessian", "AdamW"]
    .map((n) => `<span><i class="swatch" style="background:${COLORS[n]}"></i>${n}</span>`).join("");
  while (!progress || progress.step < defaults.steps) {
    progress = JSON.parse(await demo.race_advance(20));
    plotLog($("loss-plot"), progress.runs.map((r) => ({
      name: r.name, color: COLORS[r.name], points: r.losses.map((l, i) => [i, l]),
    })), "step", "training loss");
    table($("loss-table"), ["optimizer", "loss", `steps to ${+defaults.target_loss.toPrecision(3)}`, "accuracy"],
      progress.runs.map((r) => [r.name, r.losses[r.losses.length - 1].toFixed(4),
        r.steps_to_target ?? "not yet", (100 * r.accuracy).toFixed(1) + " %"]));
  }
  return progress;
}

function drawPlan(report) {
  const canvas = $("ot-plan"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const sns = report.solvers[1];
  ctx.fillStyle = "#5a6275"; ctx.font = "12px system-ui";
  if (report.config.problem === "points") {
    // Each source point joined to the target that receives most of its mass.
    const S = Math.min(W, H) - 20, ox = (W - S) / 2, oy = 10;
    const px = (v) => ox + v * S, py = (v) => oy + (1 - v) * S;
    const maxMass = Math.max(...report.plan_top.map(([, v]) => v));
    ctx.lineWidth = 1;
    report.plan_top.forEach(([j, v], i) => {
      ctx.strokeStyle = `rgba(90, 98, 117, ${0.15 + 0.85 * v / maxMass})`;
      ctx.beginPath(); ctx.moveTo(px(report.source[2 * i]), py(report.source[2 * i + 1]));
      ctx.lineTo(px(report.target[2 * j]), py(report.target[2 * j + 1])); ctx.stroke();
    });
    for (const [pts, color] of [[report.source, COLORS.sinkhorn], [report.target, COLORS.sns]]) {
      ctx.fillStyle = color;
      for (let k = 0; k < pts.length; k += 2) ctx.fillRect(px(pts[k]) - 2, py(pts[k + 1]) - 2, 4, 4);
    }
    return;
  }
  // Images: source, target, and the plan as a heat map on a log scale.
  const side = Math.round(Math.sqrt(report.source.length));
  const drawImage = (values, x0, y0, size) => {
    const max = Math.max(...values), cell = size / side;
    values.forEach((v, k) => {
      const t = Math.round(255 * (1 - v / max));
      ctx.fillStyle = `rgb(${t}, ${t}, ${255})`;
      ctx.fillRect(x0 + (k % side) * cell, y0 + Math.floor(k / side) * cell, cell + 0.5, cell + 0.5);
    });
  };
  drawImage(report.source, 10, 24, 120); ctx.fillStyle = "#5a6275"; ctx.fillText("source a", 10, 16);
  drawImage(report.target, 10, 184, 120); ctx.fillStyle = "#5a6275"; ctx.fillText("target b", 10, 176);
  const rows = Math.ceil(report.n / report.plan_block), cols = Math.ceil(report.m / report.plan_block);
  const size = Math.min(W - 160, H - 30), cell = size / Math.max(rows, cols);
  const logs = report.plan_tiles.map((v) => (v > 0 ? Math.log10(v) : -Infinity));
  const top = Math.max(...logs), bottom = top - 8;
  ctx.fillStyle = "#5a6275"; ctx.fillText(`plan P (${report.n}×${report.m}, log scale, 8 decades)`, 150, 16);
  logs.forEach((l, k) => {
    const t = Math.max(0, Math.min(1, (l - bottom) / (top - bottom)));
    const c = Math.round(255 * (1 - t));
    ctx.fillStyle = `rgb(255, ${c}, ${c})`;
    ctx.fillRect(150 + (k % cols) * cell, 24 + Math.floor(k / cols) * cell, cell + 0.5, cell + 0.5);
  });
}

async function runTransport(problem) {
  $("ot-problem").value = problem;
  $("ot-legend").innerHTML = [["sinkhorn", "Sinkhorn"], ["sns", "Safe sparse Newton (SSNS)"]]
    .map(([k, n]) => `<span><i class="swatch" style="background:${COLORS[k]}"></i>${n}</span>`).join("") +
    (problem === "points" ? "<span>plan: source points (blue) joined to the target (red) receiving most of their mass</span>" : "");
  const report = JSON.parse(await demo.transport_run(JSON.stringify({ problem })));
  plotLog($("ot-errors"), report.solvers.map((s) => ({
    name: s.name, color: COLORS[s.name], marks: true, points: s.errors,
  })), "iteration", "marginal error");
  drawPlan(report);
  table($("ot-table"), ["solver", "iterations", "Newton steps", "⟨C, P⟩", "final error", "converged", "wall ms"],
    report.solvers.map((s) => [s.name === "sns" ? "SNS" : "Sinkhorn", s.iterations, s.newton_iterations ?? "—",
      s.cost.toFixed(6), s.final_error.toExponential(2), s.converged ? "yes" : "no", s.wall_ms.toFixed(0)]));
  return report;
}

async function runBench() {
  $("bench-table").innerHTML = "";
  $("bench-timer").textContent = "measuring…";
  const b = JSON.parse(await demo.bench_run(""));
  const resolution = b.timer_resolution_ns
    ? `The browser rounds GPU timestamps to ${(b.timer_resolution_ns / 1e3).toFixed(0)} µs; figures marked * are under 10× that and only coarse.`
    : b.timing === "gpu-timestamps" ? "GPU timestamps, no rounding detected." : "Wall-clock timing (this adapter has no timestamp queries).";
  $("bench-timer").textContent = `${b.adapter || $("adapter").dataset.label}: copy roofline ${fmt(b.copy_gbps, 2)} GB/s, ` +
    `FMA roofline ${fmt(b.fma_gflops, 1)} GFLOP/s. ${resolution}`;
  table($("bench-table"), ["kernel", "n", "median ms", "rate", "of roofline"],
    b.rows.map((r) => [r.kernel, r.n, fmt(r.median_ms, 3) + (r.coarse ? " *" : ""), `${fmt(r.rate, 2)} ${r.unit}`, fmt(r.fraction, 2)]));
  return b;
}

async function main() {
  if (!navigator.gpu) {
    showUnavailable("This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or Firefox, or Safari 26, over https or localhost.");
    return { error: "no navigator.gpu" };
  }
  await init();
  let adapter;
  try {
    adapter = JSON.parse(await demo.connect());
  } catch (e) {
    showUnavailable(`WebGPU is present but no adapter or device could be had: ${e.message ?? e}`);
    return { error: String(e.message ?? e) };
  }
  // WebGPU hides adapter names; the browser's own GPUAdapterInfo says vendor and architecture.
  const info = (await navigator.gpu.requestAdapter())?.info ?? {};
  adapter.label = adapter.name || [info.vendor, info.architecture, info.description].filter(Boolean).join(" ") || "an unnamed adapter";
  $("adapter").dataset.label = adapter.label;
  $("adapter").textContent = `Running on ${adapter.label} (${adapter.backend}, ${adapter.device_type}).`;
  $("race-run").onclick = () => exclusive(runOptimizers);
  $("ot-run").onclick = () => exclusive(() => runTransport($("ot-problem").value));
  $("bench-run").onclick = () => exclusive(runBench);
  return exclusive(async () => {
    const result = { adapter };
    result.optimizers = await runOptimizers();
    result.transport = [await runTransport("points")];
    if (testMode) {
      result.packed = JSON.parse(await demo.packed_check());
      result.transport.push(await runTransport("images"));
      result.bench = await runBench();
    }
    return result;
  });
}

main()
  .then((result) => { window.curvgpuResult = { status: result.error ? "error" : "done", ...result }; })
  .catch((e) => {
    console.error(e);
    window.curvgpuResult = { status: "error", error: String(e.message ?? e) };
    $("unavailable").hidden = false;
    $("unavailable").textContent = `A demo failed: ${e.message ?? e}`;
  });
