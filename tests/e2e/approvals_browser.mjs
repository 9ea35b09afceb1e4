// Drives Debian's headless Chromium through playwright-core (peers/browser/)
// over the approvers' page, as a person would: type the token, click.
// Usage: node approvals_browser.mjs PLAN.json  (PLAN: {url, chromium, profile, steps})
// Prints one JSON line: {results: [...], dialogs: [...]}. Each step's result
// is what the test asserts on; the browser is always closed before exit.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "..", "..", "peers", "browser", "package.json"));
const { chromium } = require("playwright-core");

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const context = await chromium.launchPersistentContext(plan.profile, {
  executablePath: plan.chromium,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
  viewport: { width: 1100, height: 900 },
});
const dialogs = [];
const results = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("dialog", async (d) => { dialogs.push(d.message()); await d.dismiss(); });
  page.setDefaultTimeout(15000);
  for (const step of plan.steps) {
    switch (step.do) {
      case "login": {
        await page.goto(plan.url + "/");
        await page.fill("#token", step.token);
        await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
        results.push({
          url: page.url(),
          viewer: (await page.$(".viewer")) ? await page.textContent(".viewer") : null,
          alert: (await page.$(".error")) ? await page.textContent(".error") : null,
        });
        break;
      }
      case "reload":
        await page.goto(plan.url + "/");
        results.push({ url: page.url() });
        break;
      case "inspect":
        results.push(await page.evaluate(() => ({
          viewer: document.querySelector(".viewer")?.textContent ?? null,
          images: document.querySelectorAll("img").length,
          scripts: document.querySelectorAll("script").length,
          pending: [...document.querySelectorAll("section.request")].map((s) => ({
            id: s.dataset.id,
            tool: s.querySelector(".tool")?.textContent,
            subject: s.querySelector(".subject")?.textContent,
            arguments: s.querySelector(".arguments")?.textContent ?? null,
            hidden_args: s.querySelector(".hidden-args")?.textContent ?? null,
            approve_button: s.querySelector("form.approve button") !== null,
            deny_button: s.querySelector("form.deny button") !== null,
            own: s.querySelector(".own")?.textContent ?? null,
          })),
          history: [...document.querySelectorAll("table.history tbody tr")].map((r) => ({
            id: r.dataset.id,
            tool: r.querySelector(".tool")?.textContent,
            subject: r.querySelector(".subject")?.textContent,
            state: r.querySelector(".state")?.textContent,
            by: r.querySelector(".by")?.textContent,
            reason: r.querySelector(".reason")?.textContent,
          })),
        })));
        break;
      case "approve":
      case "deny": {
        const form = `section[data-id="${step.id}"] form.${step.do}`;
        await page.fill(`${form} input[name=reason]`, step.reason ?? "");
        const [response] = await Promise.all([
          page.waitForNavigation(),
          page.click(`${form} button`),
        ]);
        results.push({
          status: response?.status() ?? null,
          url: page.url(),
          h1: await page.textContent("h1"),
          alert: (await page.$(".error")) ? await page.textContent(".error") : null,
        });
        break;
      }
      // Wait (reloading) until a request for `tool` is pending, then decide
      // it as a person would; reports its id and when the button was clicked.
      case "decide_when_pending": {
        const deadline = Date.now() + (step.within_ms ?? 20000);
        let section = null;
        for (;;) {
          await page.goto(plan.url + "/");
          section = await page.evaluate((tool) => {
            const s = [...document.querySelectorAll("section.request")]
              .find((e) => e.querySelector(".tool")?.textContent === tool);
            return s ? s.dataset.id : null;
          }, step.tool);
          if (section || Date.now() > deadline) break;
          await page.waitForTimeout(100);
        }
        if (!section) throw new Error(`no pending request for ${step.tool}`);
        const form = `section[data-id="${section}"] form.${step.decision}`;
        await page.fill(`${form} input[name=reason]`, step.reason ?? "");
        const clicked_at_ms = Date.now();
        const [response] = await Promise.all([page.waitForNavigation(), page.click(`${form} button`)]);
        results.push({ id: section, clicked_at_ms, status: response?.status() ?? null });
        break;
      }
      case "sleep_until":
        await page.waitForTimeout(Math.max(0, step.epoch_ms - Date.now()));
        results.push({});
        break;
      case "screenshot":
        await page.screenshot({ path: step.path, fullPage: step.full ?? false });
        results.push({ path: step.path });
        break;
      default:
        throw new Error(`unknown step ${step.do}`);
    }
  }
} finally {
  await context.close();
}
console.log(JSON.stringify({ results, dialogs }));
