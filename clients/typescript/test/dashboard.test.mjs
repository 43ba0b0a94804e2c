// The dashboard (`/_/dashboard`) in headless Chromium (the system's, driven by
// playwright-core) against a real 3-node cluster of the debug `picloud`:
// signing in (operator password, API key, a wrong password), creating an app
// in the UI, deploying it with the CLI and seeing its version and routes,
// deleting it with the typed confirmation, the cluster page's nodes and a
// node killed for real (SIGKILL) shown down, then removed; a viewer member
// sees no write actions and a hand-crafted POST of one is refused; a POST
// without its CSRF token is refused. Accessibility basics (labels, names,
// Tab order) are checked on the login and apps pages.
//
// Screenshots of every page go to target/dashboard-screenshots/<page>.png
// (relative to the repository root).
//
//   cargo build -p picloud && cd clients/typescript && npm ci && npm run build &&
//   PICLOUD_BIN=$PWD/../../target/debug/picloud node --test test/dashboard.test.mjs
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
const ADMIN = { email: "admin@example.org", password: "correct horse battery staple" };
const VIEWER = { email: "viewer@example.org", password: "viewer horse battery staple" };

function skipReason() {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
  return missingBinary();
}

async function launch() {
  // As root, Chromium's sandbox needs user namespaces the container may not give.
  const args = process.getuid?.() === 0 ? ["--no-sandbox"] : [];
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Adds an operator through the admin API and sets its password with the setup token. */
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
}

/** Every input, button and link of `locator` has an accessible name (aria snapshot lines). */
function assertNamed(snapshot) {
  const unnamed = snapshot
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => /^- (textbox|button|link|checkbox|combobox)(\s*$|:|\s*\[)/.test(line));
  assert.deepEqual(unnamed, [], `controls without a name:\n${snapshot}`);
}

/** The CSRF field of the first form on the page. */
async function csrfOf(page) {
  return page.locator('input[name="csrf"]').first().getAttribute("value");
}

describe("the dashboard in Chromium", { skip: skipReason() }, () => {
  let cluster;
  let browser;
  let admin; // the admin operator's page
  let base;

  before(async () => {
    cluster = await startCluster(3);
    base = cluster.nodes[0].url;
    await addOperator(cluster.nodes[0], ADMIN, true);
    await addOperator(cluster.nodes[0], VIEWER, false);
    browser = await launch();
    admin = await (await browser.newContext()).newPage();
  });

  after(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  test("the login page: labels, names, Tab order email → password → submit", async () => {
    const page = await (await browser.newContext()).newPage();
    const response = await page.goto(`${base}/_/dashboard/apps`);
    assert.equal(response.status(), 200);
    assert.match(page.url(), /\/_\/dashboard\/login\?next=%2F_%2Fdashboard%2Fapps$/);
    const snapshot = await page.locator("main").ariaSnapshot();
    assertNamed(snapshot);
    assert.match(snapshot, /textbox "Email"/);
    assert.match(snapshot, /textbox "Password"/);
    assert.match(snapshot, /button "Sign in"/);
    assert.match(snapshot, /textbox "API key"/);
    const unlabeled = await page.evaluate(() =>
      [...document.querySelectorAll("input:not([type=hidden])")].filter((input) => input.labels.length === 0).map((input) => input.name),
    );
    assert.deepEqual(unlabeled, []);
    // The email field has focus first (autofocus); Tab walks the password form in order.
    await page.reload();
    const sequence = [await page.evaluate(() => document.activeElement.id)];
    for (let step = 0; step < 2; step++) {
      await page.keyboard.press("Tab");
      sequence.push(await page.evaluate(() => document.activeElement.id || document.activeElement.textContent));
    }
    assert.deepEqual(sequence, ["email", "password", "Sign in"]);
    await shot(page, "login");
    await page.context().close();
  });

  test("a wrong password shows invalid_credentials and signs nobody in", async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, base, { email: ADMIN.email, password: "wrong password" });
    await page.getByRole("alert").waitFor();
    assert.match(await page.getByRole("alert").textContent(), /invalid_credentials/);
    assert.match(page.url(), /\/_\/dashboard\/login$/);
    const cookies = await page.context().cookies();
    assert.equal(cookies.find((cookie) => cookie.name === "picloud_session"), undefined);
    await shot(page, "login-error");
    await page.context().close();
  });

  test("an admin operator signs in: HttpOnly, SameSite=Strict cookie; creates an app in the UI", async () => {
    await signIn(admin, base, ADMIN);
    await admin.waitForURL(/\/_\/dashboard\/apps$/);
    const session = (await admin.context().cookies()).find((cookie) => cookie.name === "picloud_session");
    assert.ok(session?.value.startsWith("pcs_"), "an operator session in the cookie");
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, "Strict");
    assert.equal(session.path, "/_/dashboard");
    await admin.getByLabel("App name").fill("shop");
    await admin.getByRole("button", { name: "Create app" }).click();
    await admin.waitForURL(/\/_\/dashboard\/apps\/shop\?flash=app-created$/);
    assert.match(await admin.getByRole("status").textContent(), /App created/);
    assert.match(await admin.locator("#active-version").textContent(), /none/);
    await admin.goto(`${base}/_/dashboard/apps`);
    assert.equal(await admin.locator('tr[data-app="shop"]').count(), 1);
    assertNamed(await admin.locator("main").ariaSnapshot());
    await shot(admin, "apps");
  });

  test("deployed with the CLI, the version and routes appear", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "picloud-dash-"));
    try {
      const manifest = `name = "shop"
${routesToml([
  ["GET", "/hello/:name", "hello.lua"],
  ["POST", "/orders", "orders.lua"],
])}
[[trigger]]
kind = "kv"
match = "orders/*"
script = "on_order.lua"
`;
      writeFileSync(path.join(dir, "picloud.toml"), manifest);
      writeFileSync(path.join(dir, "hello.lua"), `return function(req) return { json = { hello = req.params.name } } end`);
      writeFileSync(path.join(dir, "orders.lua"), `return function(req) return { json = {} } end`);
      writeFileSync(path.join(dir, "on_order.lua"), `return function(event) end`);
      const home = mkdtempSync(path.join(os.tmpdir(), "picloud-home-"));
      const deployed = spawnSync(picloudBin(), ["deploy", dir], {
        env: { ...process.env, HOME: home, PICLOUD_URL: cluster.nodes[1].url, PICLOUD_KEY: cluster.nodes[0].adminKey },
        encoding: "utf8",
        timeout: 30_000,
      });
      rmSync(home, { recursive: true, force: true });
      assert.equal(deployed.status, 0, `picloud deploy: ${deployed.stdout}\n${deployed.stderr}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // The deploy went through node 2; node 1 shows it once it has applied it.
    await eventually("version 1 on the overview", async () => {
      await admin.goto(`${base}/_/dashboard/apps/shop`);
      return (await admin.locator("#active-version").textContent()).trim() === "1";
    });
    const routes = await admin.locator("#routes-table tbody tr").allTextContents();
    assert.deepEqual(routes, ["GET/hello/:namehello.lua", "POST/ordersorders.lua"]);
    const triggers = await admin.locator("#triggers-table tbody tr").allTextContents();
    assert.equal(triggers.length, 1);
    assert.match(triggers[0], /^kvorders\/\* \(set, delete\)on_order\.lua$/);
    await shot(admin, "app");
    await admin.goto(`${base}/_/dashboard/apps`);
    assert.match(await admin.locator('tr[data-app="shop"]').textContent(), /shop1\s*2/);
  });

  test("a viewer member sees no write actions, and a hand-crafted POST is refused", async () => {
    const member = await cluster.nodes[0].admin("PUT", `/apps/shop/members/${VIEWER.email}`, { role: "viewer" });
    assert.equal(member.status, 200, JSON.stringify(member.body));
    const page = await (await browser.newContext()).newPage();
    await signIn(page, base, VIEWER);
    await page.waitForURL(/\/_\/dashboard\/apps$/);
    assert.equal(await page.locator('tr[data-app="shop"]').count(), 1);
    assert.equal(await page.getByRole("button", { name: "Create app" }).count(), 0);
    assert.equal(await page.getByRole("link", { name: /Delete/ }).count(), 0);
    await shot(page, "apps-viewer");
    await page.goto(`${base}/_/dashboard/apps/shop`);
    assert.equal((await page.locator("#active-version").textContent()).trim(), "1");
    assert.equal(await page.getByRole("link", { name: /Delete/ }).count(), 0);
    await page.goto(`${base}/_/dashboard/cluster`);
    assert.equal(await page.getByRole("button", { name: "Show join token" }).count(), 0);
    assert.equal(await page.getByRole("link", { name: /Remove node/ }).count(), 0);
    // The viewer's own valid CSRF token, and still refused by role.
    const csrf = await csrfOf(page);
    for (const [url, form] of [
      ["/_/dashboard/apps/shop/delete", { csrf, confirm: "shop" }],
      ["/_/dashboard/apps", { csrf, name: "viewers-app" }],
      ["/_/dashboard/cluster/token", { csrf }],
    ]) {
      const response = await page.request.post(`${base}${url}`, { form, maxRedirects: 0 });
      assert.equal(response.status(), 403, url);
      assert.match(await response.text(), /<code>forbidden<\/code>/, url);
    }
    const confirm = await page.goto(`${base}/_/dashboard/apps/shop/delete`);
    assert.equal(confirm.status(), 403);
    const apps = await cluster.nodes[0].admin("GET", "/apps");
    assert.deepEqual(apps.body.apps.map((app) => app.name), ["shop"]);
    await page.context().close();
  });

  test("a POST without its CSRF token, or with another session's, is refused", async () => {
    for (const form of [{ name: "no-token" }, { name: "wrong-token", csrf: "0".repeat(64) }]) {
      const response = await admin.request.post(`${base}/_/dashboard/apps`, { form, maxRedirects: 0 });
      assert.equal(response.status(), 403);
      assert.match(await response.text(), /<code>csrf_failed<\/code>/);
    }
    const response = await admin.request.post(`${base}/_/dashboard/logout`, { form: {}, maxRedirects: 0 });
    assert.equal(response.status(), 403);
    const apps = await cluster.nodes[0].admin("GET", "/apps");
    assert.deepEqual(apps.body.apps.map((app) => app.name), ["shop"]);
    // The login form has its own (double-submit) token.
    const page = await (await browser.newContext()).newPage();
    const login = await page.request.post(`${base}/_/dashboard/login`, { form: { email: ADMIN.email, password: ADMIN.password }, maxRedirects: 0 });
    assert.equal(login.status(), 403);
    assert.match(await login.text(), /csrf_failed/);
    await page.context().close();
  });

  test("an API key signs in too; its forms validate on another node", async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${base}/_/dashboard/login?next=/_/dashboard/cluster`);
    await page.getByRole("textbox", { name: "API key" }).fill(cluster.nodes[0].adminKey);
    await page.getByRole("button", { name: "Sign in with key" }).click();
    await page.waitForURL(/\/_\/dashboard\/cluster$/);
    assert.match(await page.locator("header .who").textContent(), /key /);
    // The CSRF token is derived from the credential: node 2 accepts node 1's form.
    const csrf = await csrfOf(page);
    const other = cluster.nodes[1];
    const cookie = (await context.cookies()).find((c) => c.name === "picloud_session");
    const response = await fetch(`${other.url}/_/dashboard/cluster/token`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", cookie: `picloud_session=${cookie.value}` },
      body: new URLSearchParams({ csrf }).toString(),
      redirect: "manual",
    });
    assert.equal(response.status, 200);
    assert.match(await response.text(), /id="join-token"/);
    // Signing out clears the cookie; the key itself stays valid.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.waitForURL(/\/_\/dashboard\/login\?flash=logged-out$/);
    assert.equal((await context.cookies()).find((c) => c.name === "picloud_session"), undefined);
    assert.equal((await cluster.nodes[0].admin("GET", "/whoami")).status, 200);
    await context.close();
  });

  test("deleting an app needs its name typed again", async () => {
    await admin.goto(`${base}/_/dashboard/apps`);
    await admin.getByRole("link", { name: "Delete shop" }).click();
    await admin.waitForURL(/\/apps\/shop\/delete$/);
    await shot(admin, "app-delete");
    await admin.getByLabel(/Type the app's name/).fill("shoe");
    await admin.getByRole("button", { name: "Delete shop" }).click();
    await admin.getByRole("alert").waitFor();
    assert.match(await admin.getByRole("alert").textContent(), /invalid_field/);
    assert.equal((await cluster.nodes[0].admin("GET", "/apps/shop")).status, 200);
    await admin.goto(`${base}/_/dashboard/apps/shop/delete`);
    await admin.getByLabel(/Type the app's name/).fill("shop");
    await admin.getByRole("button", { name: "Delete shop" }).click();
    await admin.waitForURL(/\/_\/dashboard\/apps\?flash=app-deleted$/);
    assert.equal(await admin.locator('tr[data-app="shop"]').count(), 0);
    assert.equal((await cluster.nodes[0].admin("GET", "/apps/shop")).status, 404);
    const missing = await admin.goto(`${base}/_/dashboard/apps/shop`);
    assert.equal(missing.status(), 404);
    assert.match(await admin.getByRole("alert").textContent(), /app_not_found/);
    await shot(admin, "not-found");
  });

  test("the cluster page lists 3 nodes; a node killed for real is shown down, then removed", async () => {
    await admin.goto(`${base}/_/dashboard/cluster`);
    assert.equal(await admin.locator("#nodes tbody tr").count(), 3);
    assert.equal(await admin.locator('#nodes tr[data-health="up"]').count(), 3);
    await admin.getByRole("button", { name: "Show join token" }).click();
    assert.match(await admin.locator("#join-token").textContent(), /\S{20,}/);
    await shot(admin, "cluster");
    // A follower other than the node the browser talks to.
    const status = await cluster.nodes[0].admin("GET", "/cluster/status");
    const victim = status.body.nodes.find((node) => node.role === "follower" && node.http !== `127.0.0.1:${cluster.nodes[0].httpPort}`);
    assert.ok(victim, JSON.stringify(status.body));
    const index = cluster.nodes.findIndex((node) => `127.0.0.1:${node.httpPort}` === victim.http);
    await cluster.nodes[index].kill();
    await eventually(`node ${victim.id} shown down`, async () => {
      await admin.goto(`${base}/_/dashboard/cluster`);
      return (await admin.locator(`#nodes tr[data-node="${victim.id}"]`).getAttribute("data-health")) === "down";
    }, 30_000);
    await shot(admin, "cluster-node-down");
    await admin.getByRole("link", { name: `Remove node ${victim.id}` }).click();
    await shot(admin, "cluster-remove");
    await admin.getByRole("button", { name: `Remove node ${victim.id}` }).click();
    await admin.waitForURL(/\/_\/dashboard\/cluster\?flash=node-removed$/);
    await eventually(`node ${victim.id} gone`, async () => {
      await admin.goto(`${base}/_/dashboard/cluster`);
      return (await admin.locator(`#nodes tr[data-node="${victim.id}"]`).count()) === 0;
    }, 30_000);
  });
});
