// Loads web-demo/ in headless Chromium (Debian's /usr/bin/chromium, WebGPU on SwiftShader),
// runs every demo with its defaults (`?test`), saves a screenshot and the page's results, and
// holds them to the native run of the same demos (`web-demo-native`, lavapipe).
//
//   node tests/browser.mjs URL EXPECTED.json OUT_DIR
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, expectedPath, outDir] = process.argv.slice(2);
if (!url || !expectedPath || !outDir) {
  console.error("usage: node tests/browser.mjs URL EXPECTED.json OUT_DIR");
  process.exit(2);
}
mkdirSync(outDir, { recursive: true });
const expected = JSON.parse(readFileSync(expectedPath, "utf8"));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--enable-unsafe-webgpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let failed = false;
const log = [];
let page;
try {
  page = await browser.newPage({ viewport: { width: 1150, height: 900 } });
  page.on("console", (m) => log.push(`[${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => log.push(`[pageerror] ${e.message}`));
  await page.goto(`${url}?test`);
  const minutes = Number(process.env.WEB_DEMO_TIMEOUT_MIN ?? 15);
  await page.waitForFunction(() => window.curvgpuResult, null, { timeout: minutes * 60 * 1000, polling: 500 });
  const result = await page.evaluate(() => window.curvgpuResult);
  await page.screenshot({ path: join(outDir, "web-demo.png"), fullPage: true });
  writeFileSync(join(outDir, "browser-results.json"), JSON.stringify(result, null, 1));
  writeFileSync(join(outDir, "console.log"), log.join("\n") + "\n");
  assert.equal(result.status, "done", `the page reported: ${result.error}\n${log.join("\n")}`);
  check(result, expected);
  assert.ok(result.packed?.equal, `packed views stepped differently: ${JSON.stringify(result.packed)}`);
  assert.ok(result.packed?.overlap_refused, `an overlap was not refused: ${JSON.stringify(result.packed)}`);
  console.log(`  packed views: ${result.packed.n} elements, bit for bit equal, overlap refused`);
  await checkWithoutWebGpu(browser);
  console.log(`web-demo: every check passed on ${result.adapter.label} (${result.adapter.backend}); screenshot ${join(outDir, "web-demo.png")}`);
} catch (e) {
  failed = true;
  console.error(`web-demo browser test FAILED: ${e.message}`);
  // What the page printed before it failed or stalled.
  writeFileSync(join(outDir, "console.log"), log.join("\n") + "\n");
  console.error(log.slice(-40).join("\n"));
  await page?.screenshot({ path: join(outDir, "web-demo-failed.png"), fullPage: true }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);

function close(what, got, want, rtol) {
  const err = Math.abs(got - want) / Math.abs(want);
  assert.ok(err <= rtol, `${what}: browser ${got}, native ${want}, relative difference ${err.toExponential(2)} > ${rtol}`);
  console.log(`  ${what}: browser ${got.toPrecision(7)}, native ${want.toPrecision(7)} (rel. diff ${err.toExponential(1)} ≤ ${rtol})`);
}

function check(result, expected) {
  // It ran on WebGPU, not a fallback.
  assert.equal(result.adapter.backend, "BrowserWebGpu", "the demo must run on the browser's WebGPU");

  // Optimizers. Both runs start from bit-identical data and parameters, and every kernel sums
  // in a fixed order, but exp/tanh/log differ by a few ulps between SwiftShader and lavapipe.
  // AdamW and AdaHessian damp such differences: their whole 301-point loss curves agree to 1e-4
  // relative (measured: 1.4e-6 and 1.1e-5). SophiaG does not: its clipped step is lr·sign(m)
  // wherever |m| > ρ·bs·h, so an m that rounds to the other side of 0 moves a parameter by 2·lr,
  // and the two trajectories part after about 20 steps (measured: 2e-4 up to step 20, 4e-2 at
  // step 30). So SophiaG is held to 1e-3 over its first 20 steps, the issue's "loss after N
  // steps from the same seed", and all three must actually train.
  const byName = (p) => Object.fromEntries(p.runs.map((r) => [r.name, r]));
  const got = byName(result.optimizers), want = byName(expected.optimizers);
  const agreeFor = { SophiaG: [20, 1e-3], AdaHessian: [Infinity, 1e-4], AdamW: [Infinity, 1e-4] };
  for (const [name, [steps, rtol]] of Object.entries(agreeFor)) {
    const g = got[name].losses, w = want[name].losses;
    assert.equal(g.length, w.length, `${name}: steps`);
    const last = Math.min(steps, g.length - 1);
    let worst = 0, at = 0;
    for (let t = 0; t <= last; t++) {
      const err = Math.abs(g[t] - w[t]) / Math.abs(w[t]);
      if (!(err <= worst)) { worst = err; at = t; }
    }
    close(`${name} loss at step ${at} (worst of steps 0–${last})`, g[at], w[at], rtol);
    assert.ok(g.at(-1) < 0.5 * g[0], `${name} must train: ${g[0]} → ${g.at(-1)}`);
  }

  // Transport. Same algorithm on the same f32 inputs: the solvers take the same path unless a
  // stopping check lands within rounding of the tolerance, and the costs differ only by the
  // ulps of exp/log propagated through the potentials (measured: 2e-7 and 3e-7 relative).
  // 1e-5 relative leaves a margin of 30.
  for (const [k, g] of result.transport.entries()) {
    const w = expected.transport[k];
    assert.equal(g.config.problem, w.config.problem);
    for (const [s, solver] of g.solvers.entries()) {
      const ws = w.solvers[s];
      const what = `${g.config.problem} ${solver.name}`;
      assert.ok(solver.converged, `${what}: did not converge (error ${solver.final_error})`);
      assert.ok(solver.final_error <= g.config.tol, `${what}: final error ${solver.final_error}`);
      close(`${what} transport cost`, solver.cost, ws.cost, 1e-5);
      // The same path, unless a stopping check lands within rounding of the tolerance: then
      // one check interval (10 Sinkhorn iterations) or one Newton step apart at most.
      assert.ok(Math.abs(solver.iterations - ws.iterations) <= 10,
        `${what}: ${solver.iterations} iterations, native ${ws.iterations}`);
      assert.ok(Math.abs((solver.newton_iterations ?? 0) - (ws.newton_iterations ?? 0)) <= 1,
        `${what}: ${solver.newton_iterations} Newton steps, native ${ws.newton_iterations}`);
      console.log(`  ${what}: ${solver.iterations} iterations (native ${ws.iterations})` +
        (solver.newton_iterations != null ? `, ${solver.newton_iterations} Newton steps` : "") +
        `, ${solver.wall_ms.toFixed(0)} ms (native ${ws.wall_ms.toFixed(0)} ms)`);
    }
  }

  // Benchmark: a roofline and every kernel measured on this adapter.
  const b = result.bench;
  assert.ok(b.copy_gbps > 0 && isFinite(b.copy_gbps), `copy roofline ${b.copy_gbps}`);
  assert.ok(b.rows.length > 0, "no benchmark rows");
  for (const r of b.rows) assert.ok(r.median_ms > 0 && isFinite(r.fraction), `${r.kernel}: ${JSON.stringify(r)}`);
  console.log(`  bench: copy roofline ${b.copy_gbps.toFixed(2)} GB/s, ${b.rows.length} kernel rows, timing ${b.timing}` +
    (b.timer_resolution_ns ? `, timestamps rounded to ${b.timer_resolution_ns / 1e3} µs` : ""));
}

// Without WebGPU the page must say so, not stay blank: once with no navigator.gpu at all, once
// with a navigator.gpu that finds no adapter (as on a machine whose GPU is blocklisted).
async function checkWithoutWebGpu(browser) {
  const cases = {
    "no navigator.gpu": () => Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined }),
    "no adapter": () => { if (navigator.gpu) navigator.gpu.requestAdapter = async () => null; },
  };
  for (const [what, disable] of Object.entries(cases)) {
    const page = await browser.newPage();
    await page.addInitScript(disable);
    await page.goto(url);
    await page.waitForFunction(() => window.curvgpuResult, null, { timeout: 60 * 1000 });
    const message = await page.locator("#unavailable").innerText();
    assert.ok(await page.locator("#unavailable").isVisible(), `${what}: no message shown`);
    assert.match(message, /WebGPU/, `${what}: the message does not name WebGPU: ${message}`);
    assert.equal(await page.locator("#optimizers").isVisible(), false, `${what}: the demos are still shown`);
    await page.screenshot({ path: join(outDir, `without-webgpu-${what.replaceAll(" ", "-")}.png`) });
    console.log(`  ${what}: the page says "${message.slice(0, 80)}…"`);
    await page.close();
  }
}
