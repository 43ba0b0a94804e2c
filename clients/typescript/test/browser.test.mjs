// The built client in headless Chromium (the system's, driven by
// playwright-core): the page is served from one node's app `public/`
// (origin http://127.0.0.1:<node 1>), and calls the API of other nodes
// under another origin (http://localhost:<node 2|3>), so every call is
// cross-origin and only works because of the app's [cors].
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { chromium } from "playwright-core";
import { clientFiles, deploy, eventually, missingBinary, REALTIME_MANIFEST, REALTIME_SCRIPTS, routesToml, startCluster } from "./cluster.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

function skipReason() {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`;
  return missingBinary();
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>picloud client test</title>
<script type="module">
  import * as picloud from "./picloud/index.js";
  window.picloud = picloud;
  window.ready = true;
</script>`;

const HELLO = `return function(req) return { json = { hello = req.params.name, origin = req.headers.origin } } end`;
const MISSING = `return function() return { status = 409, json = { error = { code = "sold_out", message = "none left" } } } end`;

async function launch() {
  // As root, Chromium's sandbox needs user namespaces the container may not give.
  const args = process.getuid?.() === 0 ? ["--no-sandbox"] : [];
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

describe("@picloud/client in Chromium", { skip: skipReason() }, () => {
  let cluster;
  let browser;
  let page;
  let apiUrls;

  before(async () => {
    cluster = await startCluster(3);
    const [a, b, c] = cluster.nodes;
    const pageOrigin = a.url;
    apiUrls = [b, c].map((node) => `http://localhost:${node.httpPort}`);
    const manifest = `name = "web"
[cors]
origins = ["${pageOrigin}"]
${routesToml([
  ["GET", "/hello/:name", "hello.lua"],
  ["POST", "/buy", "buy.lua"],
])}${REALTIME_MANIFEST}`;
    await deploy(
      a,
      "web",
      { "picloud.toml": manifest, "hello.lua": HELLO, "buy.lua": MISSING, ...REALTIME_SCRIPTS },
      { "index.html": PAGE, ...clientFiles() },
    );
    // The same route without [cors]: the browser must refuse to show it to the page.
    await deploy(a, "closed", { "picloud.toml": `name = "closed"\n${routesToml([["GET", "/hello/:name", "hello.lua"]])}`, "hello.lua": HELLO });
    browser = await launch();
    page = await browser.newPage();
    await page.goto(`${pageOrigin}/web/index.html`);
    await page.waitForFunction(() => window.ready === true);
  });

  after(async () => {
    await browser?.close();
    await cluster?.stop();
  });

  test("calls a route of another origin; errors keep their codes; no [cors], no answer", async () => {
    const outcome = await page.evaluate(async ({ urls }) => {
      const { PiCloud } = window.picloud;
      const client = new PiCloud({ urls, app: "web" });
      const hello = await client.call("GET", "/hello/browser");
      let refused;
      try {
        await client.call("POST", "/buy", { json: { item: "tea" } });
      } catch (error) {
        refused = { name: error.name, status: error.status, code: error.code, message: error.message, requestId: error.requestId };
      }
      let blocked;
      try {
        await new PiCloud({ urls, app: "closed" }).call("GET", "/hello/browser");
      } catch (error) {
        blocked = { status: error.status, code: error.code };
      }
      return { hello, refused, blocked };
    }, { urls: apiUrls });
    assert.deepEqual(outcome.hello, { hello: "browser", origin: cluster.nodes[0].url }, cluster.logs());
    // The error's JSON and request id are readable cross-origin (allow and expose headers on errors).
    assert.equal(outcome.refused.name, "PiCloudError");
    assert.deepEqual([outcome.refused.status, outcome.refused.code, outcome.refused.message], [409, "sold_out", "none left"]);
    assert.match(outcome.refused.requestId ?? "", /^[0-9a-f]{16}$/);
    // Without [cors] the browser hides the answer: to the page it is a network error.
    assert.deepEqual(outcome.blocked, { status: 0, code: "network_error" });
  });

  test("subscribes, sees a publish made through another node, resumes after its node is killed", async (t) => {
    const [a, b] = cluster.nodes;
    // Subscribe from the page through node B (then C); publish through node A.
    await page.evaluate(({ urls }) => {
      const { PiCloud } = window.picloud;
      const client = new PiCloud({ urls, app: "web", backoff: { initialMs: 50, maxMs: 500 } });
      window.seen = [];
      window.opened = [];
      const getToken = async () => (await client.call("GET", "/token/1")).token;
      window.stop = client.subscribe("chat/1", { getToken }, (data, meta) => window.seen.push([data.n, meta.id]), {
        onOpen: (url) => window.opened.push(url),
      });
    }, { urls: apiUrls });
    await eventually("the page's stream open", async () => (await page.evaluate(() => window.opened.length)) === 1);
    const publish = async (n) => {
      const response = await fetch(`${a.url}/web/publish/1`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ n }) });
      assert.equal(response.status, 200, await response.text());
    };
    const seen = () => page.evaluate(() => window.seen.map(([n]) => n));
    for (let n = 1; n <= 3; n++) await publish(n);
    await eventually("three messages in the page", async () => (await seen()).length >= 3);
    await b.kill();
    for (let n = 4; n <= 6; n++) await publish(n);
    await eventually("six messages after the page's node died", async () => (await seen()).length >= 6);
    assert.deepEqual(await seen(), [1, 2, 3, 4, 5, 6], cluster.logs());
    assert.deepEqual(await page.evaluate(() => window.opened), apiUrls);
    await page.evaluate(() => window.stop());
  });
});
