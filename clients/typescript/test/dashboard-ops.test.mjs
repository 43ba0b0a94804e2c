// The dashboard's ops pages (`/_/dashboard/apps/{app}/deploys|logs|dead-letters`,
// `/_/dashboard/metrics`) in headless Chromium (the system's, driven by
// playwright-core) against a real 3-node cluster of the debug `picloud`:
// two versions deployed with the CLI are in the history, the diff shows the
// changed line, a rollback in the UI makes the route answer v1 again; a line
// logged through another node appears in the live logs page without a reload;
// a failing kv trigger's dead letter is listed, shown, and after a fixed deploy
// retried in the UI until it is gone and its run succeeded; the metrics page
// draws its charts as SVG; a viewer sees no rollback or retry and a posted one
// is refused; a node killed for real is reported on the logs page at once.
//
// Screenshots go to target/dashboard-screenshots/ops-<page>.png (relative to
// the repository root).
//
//   cargo build -p picloud && cd clients/typescript && npm ci && npm run build &&
//   PICLOUD_BIN=$PWD/../../target/debug/picloud node --test test/dashboard-ops.test.mjs
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";
import { eventually, missingBinary, picloudBin, REPO, routesToml, startCluster } from "./cluster.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = path.join(REPO, "target/dashboard-screenshots");
const ADMIN = { email: "ops-admin@example.org", password: "correct horse battery staple" };
const VIEWER = { email: "ops-viewer@example.org", password: "viewer horse battery staple" };
const APP = "ops";

function skipReason() {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
  return missingBinary();
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `ops-${name}.png`), fullPage: true });
}

async function addOperator(node, { email, password }, admin) {
  const added = await node.admin("POST", "/admins", { email, admin });
  assert.equal(added.status, 201, JSON.stringify(added.body));
  const response = await fetch(`${node.url}/_/api/v1/admins/setup`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: added.body.setup_token, password }),
  });
  assert.equal(response.status, 200, await response.text());
}

async function signIn(page, base, { email, password }) {
  await page.goto(`${base}/_/dashboard/login`);
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
  await page.waitForURL(/\/_\/dashboard\/apps$/);
}

const MANIFEST = `name = "${APP}"
${routesToml([
  ["GET", "/greet", "greet.lua"],
  ["GET", "/say/:word", "say.lua"],
])}
[[trigger]]
kind = "kv"
match = "boom/*"
script = "boom.lua"
attempts = 1
backoff_ms = 10
`;
const greet = (version) => `-- greets the caller
local greeting = "hello ${version}"
return function(req)
  return { json = { greeting = greeting } }
end
`;
const SAY = `return function(req)
  log.info("said " .. req.params.word)
  return { json = { ok = true } }
end
`;
const BOOM = `return function(event, ctx)
  error("cannot handle " .. event.key)
end
`;
const FIXED = `return function(event, ctx)
  kv.set("fixed/" .. event.key, ctx.attempt)
end
`;

/** `picloud deploy DIR` of `files` through `node` with its admin key; fails the test on a non-zero exit. */
function deployWithCli(node, adminKey, files) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "picloud-ops-"));
  const home = mkdtempSync(path.join(os.tmpdir(), "picloud-home-"));
  try {
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
    const deployed = spawnSync(picloudBin(), ["deploy", dir], {
      env: { ...process.env, HOME: home, PICLOUD_URL: node.url, PICLOUD_KEY: adminKey },
      encoding: "utf8",
      timeout: 30_000,
    });
    assert.equal(deployed.status, 0, `picloud deploy: ${deployed.stdout}\n${deployed.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(home, { recursive: true, force: true });
  }
}

describe("the dashboard's ops pages in Chromium", { skip: skipReason() }, () => {
  let cluster;
  let browser;
  let admin;
  let base;
  let adminKey;

  before(async () => {
    cluster = await startCluster(3);
    base = cluster.nodes[0].url;
    adminKey = cluster.nodes[0].adminKey;
    await addOperator(cluster.nodes[0], ADMIN, true);
    await addOperator(cluster.nodes[0], VIEWER, false);
    const args = process.getuid?.() === 0 ? ["--no-sandbox"] : [];
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args });
    admin = await (await browser.newContext()).newPage();
    await signIn(admin, base, ADMIN);
  });

  after(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  test("two CLI deploys are in the history; the diff shows the changed line", async () => {
    const files = { "picloud.toml": MANIFEST, "say.lua": SAY, "boom.lua": BOOM };
    deployWithCli(cluster.nodes[1], adminKey, { ...files, "greet.lua": greet("v1") });
    deployWithCli(cluster.nodes[2], adminKey, { ...files, "greet.lua": greet("v2") });
    // Deployed through nodes 2 and 3; node 1 lists both once it applied them.
    await eventually("versions 1 and 2 in the history", async () => {
      await admin.goto(`${base}/_/dashboard/apps/${APP}/deploys`);
      return (await admin.locator("#versions tbody tr").count()) === 2;
    });
    const versions = await admin.locator("#versions tbody tr").evaluateAll((rows) =>
      rows.map((row) => [row.dataset.version, row.dataset.active, row.children[2].textContent.trim()]),
    );
    assert.deepEqual(versions, [
      ["2", "true", "4"],
      ["1", "false", "4"],
    ]);
    assert.equal(await admin.getByRole("button", { name: "Roll back to version 1" }).count(), 1);
    assert.equal(await admin.getByRole("button", { name: "Roll back to version 2" }).count(), 0, "not to the active one");
    await shot(admin, "history");

    await admin.getByRole("link", { name: "Changes in version 2" }).click();
    await admin.waitForURL(/\/deploys\/2\/diff$/);
    assert.match(await admin.locator("#diff-title").textContent(), /Version 2 against version 1/);
    const changed = admin.locator('section[data-file="greet.lua"]');
    assert.equal(await changed.getAttribute("data-change"), "changed");
    assert.deepEqual(await changed.locator("del").allTextContents(), ['- local greeting = "hello v1"']);
    assert.deepEqual(await changed.locator("ins").allTextContents(), ['+ local greeting = "hello v2"']);
    assert.equal(await admin.locator("section.file").count(), 1, "only greet.lua differs");
    await shot(admin, "diff");
    // Version 1 has no earlier version: every file is new.
    await admin.goto(`${base}/_/dashboard/apps/${APP}/deploys/1/diff`);
    assert.equal(await admin.locator('section.file[data-change="added"]').count(), 4);
    // A version that is not kept, and one that is not a number.
    assert.equal((await admin.goto(`${base}/_/dashboard/apps/${APP}/deploys/9/diff`)).status(), 404);
    assert.match(await admin.getByRole("alert").textContent(), /version_not_found/);
    assert.equal((await admin.goto(`${base}/_/dashboard/apps/${APP}/deploys/x/diff`)).status(), 400);
  });

  test("rolling back to v1 in the UI: the route answers v1 on every node", async () => {
    for (const node of cluster.nodes) {
      await eventually(`v2 served by ${node.url}`, async () => {
        const response = await fetch(`${node.url}/${APP}/greet`);
        return response.ok && (await response.json()).greeting === "hello v2";
      });
    }
    await admin.goto(`${base}/_/dashboard/apps/${APP}/deploys`);
    await admin.getByRole("button", { name: "Roll back to version 1" }).click();
    await admin.waitForURL(/\/deploys\?flash=rolled-back$/);
    assert.match(await admin.getByRole("status").textContent(), /Rolled back/);
    assert.equal(await admin.locator('#versions tr[data-version="1"]').getAttribute("data-active"), "true");
    assert.equal(await admin.locator('#versions tr[data-version="2"]').getAttribute("data-active"), "false");
    await shot(admin, "rolled-back");
    for (const node of cluster.nodes) {
      await eventually(`v1 served by ${node.url}`, async () => {
        const response = await fetch(`${node.url}/${APP}/greet`);
        return response.ok && (await response.json()).greeting === "hello v1";
      });
    }
  });

  test("a line logged through another node arrives in the live logs page without a reload", async () => {
    const other = cluster.nodes[1];
    const otherId = (await (await fetch(`${other.url}/_/health`)).json()).node_id;
    // One line before the page opens: drawn by the server.
    assert.equal((await fetch(`${other.url}/${APP}/say/before`)).status, 200);
    await eventually("the earlier line drawn", async () => {
      await admin.goto(`${base}/_/dashboard/apps/${APP}/logs`);
      return (await admin.locator("#log-lines li", { hasText: "said before" }).count()) === 1;
    });
    await admin.locator('#log-lines[data-following="true"]').waitFor();
    await admin.evaluate(() => {
      window.notReloaded = true;
    });
    const word = `live${Date.now()}`;
    // Logged on node 2 only, after the page was drawn: it can only arrive live.
    assert.equal((await fetch(`${other.url}/${APP}/say/${word}`)).status, 200);
    await eventually(`the line "said ${word}" in the page`, async () => {
      return (await admin.locator("#log-lines li", { hasText: `said ${word}` }).count()) === 1;
    }, 20_000);
    const line = admin.locator("#log-lines li", { hasText: `said ${word}` }).first();
    assert.match(await line.locator(".node").textContent(), new RegExp(`^node ${otherId}$`));
    assert.equal(await line.getAttribute("data-level"), "info");
    assert.equal(await admin.evaluate(() => window.notReloaded), true, "no reload");
    await shot(admin, "logs");
  });

  test("a failing trigger's dead letter: listed, shown, retried after a fix, gone", async () => {
    const put = await fetch(`${cluster.nodes[2].url}/_/api/v1/apps/${APP}/kv/boom/1`, {
      method: "PUT",
      headers: { authorization: `Bearer ${adminKey}`, "content-type": "application/json" },
      body: "1",
    });
    assert.ok(put.ok, await put.text());
    await eventually("the dead letter listed", async () => {
      await admin.goto(`${base}/_/dashboard/apps/${APP}/dead-letters`);
      return (await admin.locator("#dead-letters tbody tr").count()) === 1;
    });
    const row = admin.locator("#dead-letters tbody tr");
    assert.match(await row.textContent(), /boom\.lua|kv/);
    assert.match(await row.textContent(), /cannot handle boom\/1/);
    await shot(admin, "dead-letters");
    const id = await row.getAttribute("data-id");
    await admin.getByRole("link", { name: `Dead letter ${id}` }).click();
    await admin.waitForURL(new RegExp(`/dead-letters/${id}$`));
    assert.match(await admin.locator("#dead-letter-error").textContent(), /cannot handle boom\/1/);
    assert.match(await admin.locator("#dead-letter-event").textContent(), /"key": "boom\/1"/);
    assert.equal(await admin.locator("#attempts tbody tr").count(), 1);
    await shot(admin, "dead-letter");

    // Fix the script (v3), then retry in the UI.
    deployWithCli(cluster.nodes[0], adminKey, { "picloud.toml": MANIFEST, "say.lua": SAY, "boom.lua": FIXED, "greet.lua": greet("v3") });
    await eventually("v3 active here", async () => {
      const app = await cluster.nodes[0].admin("GET", `/apps/${APP}`);
      return app.body.active_version === 3;
    });
    await admin.reload();
    await admin.getByRole("button", { name: `Retry dead letter ${id}` }).click();
    await admin.waitForURL(/\/dead-letters\?flash=dead-letter-retried$/);
    assert.match(await admin.getByRole("status").textContent(), /queued to run again/);
    await eventually("the retried run succeeded", async () => {
      const fixed = await cluster.nodes[0].admin("GET", `/apps/${APP}/kv/fixed/boom/1`);
      return fixed.status === 200;
    });
    await admin.goto(`${base}/_/dashboard/apps/${APP}/dead-letters`);
    assert.equal(await admin.locator("#dead-letters tbody tr").count(), 0);
    assert.equal(await admin.locator("#no-dead-letters").count(), 1);
    const gone = await admin.goto(`${base}/_/dashboard/apps/${APP}/dead-letters/${id}`);
    assert.equal(gone.status(), 404);
    assert.match(await admin.getByRole("alert").textContent(), /dead_letter_not_found/);
  });

  test("the metrics page draws its charts as inline SVG", async () => {
    await admin.goto(`${base}/_/dashboard/metrics`);
    const charts = admin.locator("#charts figure.chart");
    assert.equal(await charts.count(), 7);
    assert.equal(await admin.locator("#charts figure.chart svg").count(), 7);
    // Every figure the page draws is measured: requests, errors, script time
    // and trigger runs from the node's metrics snapshot.
    for (const chart of ["requests", "errors", "script-time", "trigger-runs"]) {
      assert.equal(await admin.locator(`#chart-${chart}`).getAttribute("data-measured"), "true", chart);
    }
    // With two samples (5 s apart), a measured chart draws a line.
    await eventually("a line in the Raft applied chart", async () => {
      await admin.goto(`${base}/_/dashboard/metrics`);
      return (await admin.locator("#chart-raft-applied svg polyline").count()) === 1;
    }, 20_000);
    const label = await admin.locator("#chart-raft-applied svg").getAttribute("aria-label");
    assert.match(label, /^Raft entries applied: now [\d.]+ \/s, highest [\d.]+ \/s in the last 10 minutes$/);
    await shot(admin, "metrics");
  });

  test("a viewer sees no rollback, retry or delete, and a posted one is refused", async () => {
    const member = await cluster.nodes[0].admin("PUT", `/apps/${APP}/members/${VIEWER.email}`, { role: "viewer" });
    assert.equal(member.status, 200, JSON.stringify(member.body));
    const page = await (await browser.newContext()).newPage();
    await signIn(page, base, VIEWER);
    await page.goto(`${base}/_/dashboard/apps/${APP}/deploys`);
    assert.equal(await page.locator("#versions tbody tr").count(), 3);
    assert.equal(await page.getByRole("button", { name: /Roll back/ }).count(), 0);
    await page.goto(`${base}/_/dashboard/apps/${APP}/logs`);
    assert.equal(await page.locator("#log-lines").count(), 1, "a viewer reads the logs");
    const csrf = await page.locator('input[name="csrf"]').first().getAttribute("value");
    for (const url of [`/apps/${APP}/deploys/2/rollback`, `/apps/${APP}/dead-letters/1/retry`, `/apps/${APP}/dead-letters/1/delete`]) {
      const response = await page.request.post(`${base}/_/dashboard${url}`, { form: { csrf }, maxRedirects: 0 });
      assert.equal(response.status(), 403, url);
      assert.match(await response.text(), /<code>forbidden<\/code>/, url);
    }
    const app = await cluster.nodes[0].admin("GET", `/apps/${APP}`);
    assert.equal(app.body.active_version, 3, "not rolled back");
    await page.context().close();
  });

  test("a node killed for real is reported on the logs page, not waited for", async () => {
    const victim = cluster.nodes[2];
    const victimId = (await (await fetch(`${victim.url}/_/health`)).json()).node_id;
    await victim.kill();
    const started = Date.now();
    const response = await admin.goto(`${base}/_/dashboard/apps/${APP}/logs`);
    const elapsed = Date.now() - started;
    assert.equal(response.status(), 200);
    assert.match(await admin.locator(`[data-unavailable="${victimId}"]`).textContent(), new RegExp(`Node ${victimId} did not answer`));
    // The other nodes' lines are still there (node 2's "said" lines).
    assert.ok((await admin.locator("#log-lines li", { hasText: "said before" }).count()) >= 1);
    // MEMBER_LOGS_WAIT_MS (1 s) bounds the wait for a member, plus the page's own work.
    assert.ok(elapsed < 5_000, `the page took ${elapsed} ms`);
    await shot(admin, "logs-node-down");
  });
});
