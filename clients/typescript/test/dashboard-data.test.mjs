// The dashboard's data browsers (kv, documents, files, secrets, users,
// members) in headless Chromium (the system's, driven by playwright-core)
// against a real one-node cluster of the debug `picloud` (nothing here
// needs three: every change is a Raft write either way). As an admin: kv by
// prefix with paging, an edit seen through the app's own route, a delete
// after its confirmation; a documents query with its results and the
// planner's explain, a document deleted; a file uploaded, downloaded (the
// same bytes) and deleted; a secret set whose value appears nowhere in the
// page's HTML while a script reads it; a user invited (the mail captured),
// a role added and removed, a user deleted; a viewer member added. As that
// viewer: no write form on any page, and hand-crafted POSTs with the
// viewer's own CSRF token are refused 403.
//
// Screenshots of every page go to target/dashboard-screenshots/data-<page>.png.
//
//   cargo build -p picloud && cd clients/typescript && npm ci && npm run build &&
//   PICLOUD_BIN=$PWD/../../target/debug/picloud node --test test/dashboard-data.test.mjs
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { deploy, eventually, missingBinary, REPO, routesToml, startCluster } from "./cluster.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = path.join(REPO, "target/dashboard-screenshots");
const ADMIN = { email: "admin@example.org", password: "correct horse battery staple" };
const VIEWER = { email: "viewer@example.org", password: "viewer horse battery staple" };
const APP = "data";
const SECRET_VALUE = "s3cr3t-Value-Never-Shown-91";

const MANIFEST = `name = "${APP}"
[auth]
signup = "invite"
[auth.templates.invite]
subject = "Join {{app}}"
text = "Hello {{email}}: {{link}}"
[[index]]
collection = "orders"
fields = ["status"]
${routesToml([
  ["GET", "/kv/:key", "kv.lua"],
  ["GET", "/secret", "secret.lua"],
])}`;

const SCRIPTS = {
  "picloud.toml": MANIFEST,
  "kv.lua": `return function(req) return { json = { value = kv.get("item/" .. req.params.key) or json.null } } end`,
  "secret.lua": `return function(req) return { json = { value = secrets.get("API_TOKEN") } } end`,
};

function skipReason() {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
  return missingBinary();
}

async function launch() {
  const args = process.getuid?.() === 0 ? ["--no-sandbox"] : [];
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `data-${name}.png`), fullPage: true });
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

const pad = (n) => String(n).padStart(3, "0");

describe("the dashboard's data browsers in Chromium", { skip: skipReason() }, () => {
  let cluster;
  let node;
  let browser;
  let admin;
  let base;
  let dash;

  before(async () => {
    cluster = await startCluster(1);
    node = cluster.nodes[0];
    base = node.url;
    dash = `${base}/_/dashboard/apps/${APP}`;
    await addOperator(node, ADMIN, true);
    await addOperator(node, VIEWER, false);
    assert.equal((await node.admin("POST", "/apps", { name: APP })).status, 201);
    await deploy(node, APP, SCRIPTS);
    for (let n = 0; n < 60; n++) {
      const put = await node.admin("PUT", `/apps/${APP}/kv/item/${pad(n)}`, { n });
      assert.equal(put.status, 200, JSON.stringify(put.body));
    }
    assert.equal((await node.admin("PUT", `/apps/${APP}/kv/other/x`, { other: true })).status, 200);
    const docs = [];
    for (let n = 0; n < 12; n++) docs.push({ n, status: n % 3 === 0 ? "open" : "closed" });
    const inserted = await node.admin("POST", `/apps/${APP}/docs/orders`, { docs });
    assert.equal(inserted.status, 200, JSON.stringify(inserted.body));
    browser = await launch();
    admin = await (await browser.newContext()).newPage();
    await signIn(admin, base, ADMIN);
  });

  after(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  test("kv: a prefix, two pages, an edit seen by the app's route, a delete after confirming", async () => {
    await admin.goto(`${dash}/kv`);
    await admin.getByLabel("Key prefix").fill("item/");
    await admin.getByRole("button", { name: "Filter" }).click();
    await admin.waitForURL(/kv\?prefix=item%2F$/);
    assert.equal(await admin.locator("#kv tbody tr").count(), 50);
    assert.equal(await admin.locator('#kv tr[data-key="other/x"]').count(), 0);
    await shot(admin, "kv");
    await admin.getByRole("link", { name: "Next page" }).click();
    const second = await admin.locator("#kv tbody tr").evaluateAll((rows) => rows.map((row) => row.dataset.key));
    assert.deepEqual(second, Array.from({ length: 10 }, (_, i) => `item/${pad(50 + i)}`));
    assert.equal(await admin.getByRole("link", { name: "Next page" }).count(), 0);
    await admin.getByRole("link", { name: "item/055" }).click();
    assert.deepEqual(JSON.parse(await admin.locator("#kv-value").inputValue()), { n: 55 });
    await admin.locator("#kv-value").fill('{"n": 999, "edited": true}');
    await admin.getByRole("button", { name: "Save value" }).click();
    await admin.waitForURL(/flash=kv-saved/);
    await shot(admin, "kv-value");
    const seen = await (await fetch(`${base}/${APP}/kv/055`)).json();
    assert.deepEqual(seen, { value: { n: 999, edited: true } });
    // Bad JSON is the invalid_json error page, and nothing changes.
    await admin.locator("#kv-value").fill("{nope");
    await admin.getByRole("button", { name: "Save value" }).click();
    await admin.getByRole("alert").waitFor();
    assert.match(await admin.getByRole("alert").textContent(), /invalid_json/);
    await admin.goto(`${dash}/kv/show?key=item%2F055`);
    await admin.getByRole("link", { name: "Delete this key…" }).click();
    await shot(admin, "kv-delete");
    await admin.getByRole("button", { name: "Delete key" }).click();
    await admin.waitForURL(/kv\?flash=kv-deleted$/);
    assert.equal((await node.admin("GET", `/apps/${APP}/kv/item/055`)).status, 404);
    // A new key through the add form.
    await admin.getByLabel("Key", { exact: true }).fill("added/one");
    await admin.getByLabel("Value (JSON)").fill("[1, 2]");
    await admin.getByRole("button", { name: "Save key" }).click();
    await admin.waitForURL(/flash=kv-saved/);
    assert.deepEqual((await node.admin("GET", `/apps/${APP}/kv/added/one`)).body.value, [1, 2]);
  });

  test("documents: a query's results and its explain (index), a document deleted", async () => {
    await admin.goto(`${dash}/docs`);
    await admin.getByLabel("Collection").fill("orders");
    await admin.getByLabel(/^Query/).fill('{"status": "open"}');
    await admin.getByRole("button", { name: "Run query" }).click();
    await admin.locator("#docs").waitFor();
    assert.equal(await admin.locator("#docs tbody tr").count(), 4);
    assert.equal(await admin.locator("#docs-explain dd[data-plan]").getAttribute("data-plan"), "index");
    assert.match(await admin.locator("#docs-explain").textContent(), /Documents examined\s*4/);
    await shot(admin, "docs");
    // Without the index's field: a collection scan of all 12.
    await admin.getByLabel(/^Query/).fill('{"n": {"$gte": 6}}');
    await admin.getByRole("button", { name: "Run query" }).click();
    await admin.waitForURL(/n%22/);
    assert.equal(await admin.locator("#docs-explain dd[data-plan]").getAttribute("data-plan"), "collection_scan");
    assert.equal(await admin.locator("#docs tbody tr").count(), 6);
    const id = await admin.locator("#docs tbody tr").first().getAttribute("data-id");
    await admin.locator("#docs tbody tr").first().getByRole("link").click();
    assert.equal(JSON.parse(await admin.locator("#doc").textContent())._id, id);
    await admin.getByRole("link", { name: "Delete this document…" }).click();
    await admin.getByRole("button", { name: "Delete document" }).click();
    await admin.waitForURL(/flash=doc-deleted$/);
    assert.equal((await node.admin("GET", `/apps/${APP}/docs/orders/${id}`)).status, 404);
    // A malformed query is the invalid_json error page.
    const bad = await admin.goto(`${dash}/docs?collection=orders&query=%7Bnope`);
    assert.equal(bad.status(), 400);
  });

  test("files: upload, download the same bytes, delete", async () => {
    const bytes = Buffer.from(Array.from({ length: 3000 }, (_, i) => (i * 7) % 256));
    await admin.goto(`${dash}/files`);
    await admin.getByLabel(/^Path \(empty/).fill("docs/blob.bin");
    await admin.getByLabel("File", { exact: true }).setInputFiles({ name: "blob.bin", mimeType: "application/octet-stream", buffer: bytes });
    await admin.getByRole("button", { name: "Upload" }).click();
    await admin.waitForURL(/flash=file-uploaded$/);
    assert.equal(await admin.locator('#files tr[data-path="docs/blob.bin"]').count(), 1);
    await shot(admin, "files");
    const href = await admin.getByRole("link", { name: "Download docs/blob.bin" }).getAttribute("href");
    const download = await admin.request.get(`${base}${href}`);
    assert.equal(download.status(), 200);
    assert.match(download.headers()["content-disposition"], /^attachment/);
    assert.ok(Buffer.from(await download.body()).equals(bytes), "the downloaded bytes are the uploaded ones");
    // Without the cookie, no file.
    const anonymous = await fetch(`${base}${href}`, { redirect: "manual" });
    assert.equal(anonymous.status, 303);
    await admin.getByRole("link", { name: "Delete file docs/blob.bin" }).click();
    await admin.getByRole("button", { name: "Delete file" }).click();
    await admin.waitForURL(/flash=file-deleted$/);
    assert.equal((await node.admin("GET", `/apps/${APP}/files?prefix=docs/`)).body.files.length, 0);
  });

  test("secrets: set one, its value nowhere in the HTML, a script reads it; delete", async () => {
    await admin.goto(`${dash}/secrets`);
    assert.equal(await admin.getByLabel("Value").getAttribute("type"), "password");
    await admin.getByLabel("Name").fill("API_TOKEN");
    await admin.getByLabel("Value").fill(SECRET_VALUE);
    await admin.getByRole("button", { name: "Set secret" }).click();
    await admin.waitForURL(/flash=secret-set$/);
    assert.equal(await admin.locator('#secrets tr[data-secret="API_TOKEN"]').count(), 1);
    assert.ok(!(await admin.content()).includes(SECRET_VALUE), "the value is not in the page");
    const raw = await admin.request.get(`${dash}/secrets`);
    assert.ok(!(await raw.text()).includes(SECRET_VALUE), "nor in its HTML source");
    await shot(admin, "secrets");
    assert.deepEqual(await (await fetch(`${base}/${APP}/secret`)).json(), { value: SECRET_VALUE });
    await admin.getByRole("link", { name: "Delete secret API_TOKEN" }).click();
    await admin.getByRole("button", { name: "Delete secret" }).click();
    await admin.waitForURL(/flash=secret-deleted$/);
    assert.deepEqual((await node.admin("GET", `/apps/${APP}/secrets`)).body.secrets, []);
  });

  test("users: invite (mail captured), add and remove a role, delete with confirmation", async () => {
    await admin.goto(`${dash}/users`);
    await admin.getByLabel("Email", { exact: true }).fill("cat@example.org");
    await admin.getByLabel(/^Roles/).fill("editor");
    await admin.getByRole("button", { name: "Send invitation" }).click();
    await admin.waitForURL(/flash=user-invited$/);
    await eventually("the invitation mailed", async () => {
      const mail = await node.admin("GET", `/apps/${APP}/mail`);
      return mail.body.items?.some((item) => item.to.includes("cat@example.org"));
    });
    const created = await node.admin("POST", `/apps/${APP}/users`, { email: "bea@example.org", password: "a long enough password" });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    await admin.goto(`${dash}/users`);
    assert.equal(await admin.locator('#users tr[data-user="bea@example.org"]').count(), 1);
    await shot(admin, "users");
    await admin.getByLabel("Find by email").fill("bea@example.org");
    await admin.getByRole("button", { name: "Find" }).click();
    await admin.getByRole("link", { name: "bea@example.org" }).click();
    await admin.getByLabel("Add a role").fill("editor");
    await admin.getByRole("button", { name: "Add role" }).click();
    await admin.waitForURL(/flash=user-roles$/);
    assert.match(await admin.locator("#user-roles").textContent(), /editor/);
    assert.deepEqual((await node.admin("GET", `/apps/${APP}/users/${created.body.id}`)).body.roles, ["editor"]);
    await shot(admin, "user");
    await admin.getByRole("button", { name: "Remove role editor" }).click();
    await admin.waitForURL(/flash=user-roles$/);
    assert.deepEqual((await node.admin("GET", `/apps/${APP}/users/${created.body.id}`)).body.roles, []);
    await admin.getByRole("link", { name: "Delete this user…" }).click();
    await admin.getByRole("button", { name: "Delete user" }).click();
    await admin.waitForURL(/flash=user-deleted$/);
    assert.equal((await node.admin("GET", `/apps/${APP}/users/${created.body.id}`)).status, 404);
  });

  test("members: an admin adds a viewer member", async () => {
    await admin.goto(`${dash}/members`);
    await admin.getByLabel("Operator email").fill(VIEWER.email);
    await admin.getByLabel("Role", { exact: true }).selectOption("viewer");
    await admin.getByRole("button", { name: "Add member" }).click();
    await admin.waitForURL(/flash=member-set$/);
    assert.equal(await admin.locator(`#members tr[data-member="${VIEWER.email}"]`).getAttribute("data-role"), "viewer");
    await shot(admin, "members");
    const members = await node.admin("GET", `/apps/${APP}/members`);
    assert.deepEqual(members.body.members.map((m) => [m.email, m.role]), [[VIEWER.email, "viewer"]]);
  });

  test("a viewer sees no write forms, and hand-crafted POSTs are refused 403", async () => {
    const page = await (await browser.newContext()).newPage();
    await signIn(page, base, VIEWER);
    for (const sub of ["kv", "kv/show?key=item%2F001", "docs?collection=orders", "files", "users", "members"]) {
      const response = await page.goto(`${dash}/${sub}`);
      assert.equal(response.status(), 200, sub);
      const actions = await page.locator("main form[method=post]").evaluateAll((forms) => forms.map((form) => form.getAttribute("action")));
      assert.deepEqual(actions, [], `${sub}: write forms shown to a viewer`);
      assert.equal(await page.getByRole("link", { name: /Delete|Remove/ }).count(), 0, sub);
      await shot(page, `viewer-${sub.split(/[/?]/)[0]}`);
    }
    assert.equal((await page.goto(`${dash}/secrets`)).status(), 403, "secrets are for admins");
    await page.goto(`${dash}/kv`);
    const csrf = await page.locator('input[name="csrf"]').first().getAttribute("value");
    for (const [url, form] of [
      ["kv/set", { csrf, key: "item/001", value: "1" }],
      ["kv/delete", { csrf, key: "item/001" }],
      ["docs/delete", { csrf, collection: "orders", id: "x" }],
      ["files/delete", { csrf, path: "x" }],
      ["secrets", { csrf, name: "X", value: "y" }],
      ["users/invite", { csrf, email: "dan@example.org" }],
      ["members/set", { csrf, email: VIEWER.email, role: "owner" }],
    ]) {
      const response = await page.request.post(`${dash}/${url}`, { form, maxRedirects: 0 });
      assert.equal(response.status(), 403, url);
      assert.match(await response.text(), /<code>forbidden<\/code>/, url);
    }
    const upload = await page.request.post(`${dash}/files/upload`, {
      multipart: { csrf, path: "v.txt", file: { name: "v.txt", mimeType: "text/plain", buffer: Buffer.from("v") } },
      maxRedirects: 0,
    });
    assert.equal(upload.status(), 403);
    assert.deepEqual((await node.admin("GET", `/apps/${APP}/kv/item/001`)).body.value, { n: 1 });
    const members = await node.admin("GET", `/apps/${APP}/members`);
    assert.equal(members.body.members[0].role, "viewer");
    await page.context().close();
  });

  test("a form without its CSRF token is refused, an upload too", async () => {
    const response = await admin.request.post(`${dash}/kv/delete`, { form: { key: "item/001" }, maxRedirects: 0 });
    assert.equal(response.status(), 403);
    assert.match(await response.text(), /csrf_failed/);
    const upload = await admin.request.post(`${dash}/files/upload`, {
      multipart: { path: "c.txt", file: { name: "c.txt", mimeType: "text/plain", buffer: Buffer.from("c") } },
      maxRedirects: 0,
    });
    assert.equal(upload.status(), 403);
    assert.match(await upload.text(), /csrf_failed/);
    assert.equal((await node.admin("GET", `/apps/${APP}/kv/item/001`)).status, 200);
  });
});
