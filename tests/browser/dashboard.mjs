// Drives the dashboard of a running engine in headless Chromium, as a user would:
//   node dashboard.mjs <base url> <sluice binary> <plugin> <new .wasm> <expected top keys, JSON>
//                      <expected top keys after the deploy, JSON> <screenshot dir>
// Checks that the page loads from the binary, its charts gain points as batches complete, the
// live results show the expected top keys, a deploy through the CLI appears in the swap history
// and changes the results, and a source can be paused and resumed from the page. Saves a
// screenshot at each step. Prints one JSON line of findings; exits non-zero on any failure.
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, sluice, plugin, wasm, expectedJson, afterJson, shots] = process.argv.slice(2);
const expected = JSON.parse(expectedJson);
const after = JSON.parse(afterJson);
mkdirSync(shots, { recursive: true });
const ui = new URL(url).host;
const findings = {};
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
const pageErrors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") pageErrors.push(m.text()); });
  page.on("requestfailed", (r) => { if (!r.url().includes("/api/events")) pageErrors.push("request failed: " + r.url()); });
  await page.goto(url);
  findings.title = await page.title();

  // Charts gain points as batches complete, without a reload.
  const points = () => page.evaluate(() => window.sluice.charts.rate.data[0].length);
  await page.waitForFunction(() => window.sluice && window.sluice.charts.rate.data[0].length >= 2, null, { timeout: 20000 });
  const before = await points();
  await page.waitForFunction((n) => window.sluice.charts.rate.data[0].length >= n + 2, before, { timeout: 20000 });
  findings.points = [before, await points()];
  findings.connection = await page.textContent("#connection");

  // The live results show the expected top keys, in order.
  const topKeys = () => page.$$eval(".result tbody tr", (rows) => rows.map((r) => r.cells[0].textContent));
  await page.waitForFunction((exp) => {
    const rows = [...document.querySelectorAll(".result tbody tr")].map((r) => r.cells[0].textContent);
    return exp.every((k, i) => rows[i] === k);
  }, expected, { timeout: 20000 });
  findings.top = await topKeys();
  findings.bars = await page.evaluate(() => {
    const bar = Object.entries(window.sluice.charts).find(([k]) => k.startsWith("bar:"));
    return bar ? bar[1].data[1].length : 0;
  });
  await page.screenshot({ path: `${shots}/1-live.png`, fullPage: true });

  // A deploy through the CLI shows in the swap history and the serving version.
  const out = execFileSync(sluice, ["deploy", plugin, wasm, "--ui", ui], { encoding: "utf8" });
  const hash = JSON.parse(out).hash;
  findings.deployed = hash;
  await page.waitForFunction((h) => document.querySelector("#plugin-history").textContent.includes(h), hash, { timeout: 20000 });
  await page.waitForFunction((h) => [...document.querySelectorAll("#plugin-history tbody tr")]
    .some((r) => r.cells[2].textContent === "swapped" && r.cells[4].textContent === h), hash, { timeout: 20000 });
  await page.waitForFunction((h) => document.querySelector("#plugins .serving").textContent === h, hash, { timeout: 20000 });
  await page.waitForFunction((exp) => {
    const rows = [...document.querySelectorAll(".result tbody tr")].map((r) => r.cells[0].textContent);
    return exp.every((k, i) => rows[i] === k);
  }, after, { timeout: 20000 });
  findings.topAfterDeploy = await topKeys();
  await page.screenshot({ path: `${shots}/2-deployed.png`, fullPage: true });

  // Pause and resume a receiver from the page.
  await page.click("#sources button[data-action=pause]");
  await page.waitForSelector("#sources .status-paused", { timeout: 10000 });
  await page.screenshot({ path: `${shots}/3-paused.png`, fullPage: true });
  await page.click("#sources button[data-action=resume]");
  await page.waitForFunction(() => !document.querySelector("#sources .status-paused"), null, { timeout: 10000 });
  findings.pauseResume = true;
  findings.batchRows = await page.$$eval("#batches tbody tr[data-batch]", (rows) => rows.length);
  await page.screenshot({ path: `${shots}/4-resumed.png`, fullPage: true });
} catch (err) {
  findings.error = String(err && err.stack || err);
} finally {
  await browser.close();
}
findings.pageErrors = pageErrors;
console.log(JSON.stringify(findings));
process.exit(findings.error || pageErrors.length ? 1 : 0);
