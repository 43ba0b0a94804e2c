// PiCloud.call and PiCloud.subscribe against tiny HTTP servers on 127.0.0.1:
// JSON and errors, failover only where it is safe, and the subscription's
// reconnect, resume by id, token refresh and stop.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { PiCloud, PiCloudError, backoffDelayMs } from "../dist/index.js";

/** Starts a server on 127.0.0.1 with `handler`; returns its URL, its request log and close. */
async function serve(handler) {
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push({ method: req.method, url: req.url, headers: req.headers });
    handler(req, res, requests.length);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

/** A URL where nothing listens (a port just released). */
async function deadUrl() {
  const server = await serve(() => {});
  await server.close();
  return server.url;
}

/** Polls `condition` every 10 ms for up to 10 s. */
async function until(what, condition) {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

function json(res, status, body, headers = {}) {
  res.writeHead(status, { "content-type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

const FAST = { initialMs: 5, maxMs: 20 };

test("call returns parsed JSON or text and throws coded errors", async () => {
  const server = await serve((req, res) => {
    if (req.url.startsWith("/shop/echo")) {
      let body = "";
      req.on("data", (chunk) => (body += chunk));
      req.on("end", () => json(res, 200, { method: req.method, url: req.url, type: req.headers["content-type"], body: body && JSON.parse(body) }));
    } else if (req.url === "/shop/text") {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("plain");
    } else if (req.url === "/shop/proxy") {
      res.writeHead(502, { "content-type": "text/html" });
      res.end("<h1>bad gateway</h1>");
    } else {
      json(res, 404, { error: { code: "route_not_found", message: "no route", request_id: "req-7" } }, { "x-request-id": "req-7" });
    }
  });
  const client = new PiCloud({ urls: [server.url + "/"], app: "shop" });
  const echoed = await client.call("post", "/echo", { json: { n: 1 }, query: { a: "x y", skip: undefined, b: 2 } });
  assert.deepEqual(echoed, { method: "POST", url: "/shop/echo?a=x+y&b=2", type: "application/json", body: { n: 1 } });
  assert.equal(await client.call("GET", "/text"), "plain");
  await assert.rejects(client.call("GET", "/missing"), (error) => {
    assert.ok(error instanceof PiCloudError);
    assert.deepEqual([error.status, error.code, error.message, error.requestId], [404, "route_not_found", "no route", "req-7"]);
    return true;
  });
  await assert.rejects(client.call("GET", "/proxy"), { status: 502, code: "http_502" });
  await server.close();
});

test("network errors move idempotent calls to the next node, never a POST", async () => {
  const server = await serve((req, res) => json(res, 200, { ok: true }));
  const dead = await deadUrl();
  const client = new PiCloud({ urls: [dead, server.url], app: "shop" });
  // POST first: the dead node is first in line and the POST must not be repeated.
  await assert.rejects(client.call("POST", "/order", { json: {} }), { status: 0, code: "network_error" });
  assert.equal(server.requests.length, 0, "the POST was not sent to a second node");
  assert.deepEqual(await client.call("GET", "/thing"), { ok: true });
  assert.equal(server.requests.length, 1);
  // The node that answered is preferred now: a POST goes straight to it.
  assert.deepEqual(await client.call("POST", "/order", { json: {} }), { ok: true });
  // An HTTP error is an answer: no failover.
  const failing = await serve((req, res) => json(res, 503, { error: { code: "no_leader", message: "later" } }));
  const second = await serve((req, res) => json(res, 200, { ok: true }));
  const pair = new PiCloud({ urls: [failing.url, second.url], app: "shop" });
  await assert.rejects(pair.call("GET", "/x"), { status: 503, code: "no_leader" });
  assert.equal(second.requests.length, 0);
  await Promise.all([server.close(), failing.close(), second.close()]);
});

function sse(res) {
  res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-store" });
  res.write(": hello\n\n");
}

function message(res, id, body) {
  res.write(`id: ${id}\ndata: ${JSON.stringify(body)}\n\n`);
}

test("a subscription resumes on the next node after its stream breaks, each message once, in order", async () => {
  let closedOnB = false;
  const a = await serve((req, res) => {
    sse(res);
    message(res, "1-1", { n: 1 });
    message(res, "1-2", { n: 2 });
    // Half an event, then the node dies: 1-3 must not count as seen.
    res.write("id: 1-3\ndata: {\"n\":");
    setTimeout(() => res.socket.destroy(), 20);
  });
  const b = await serve((req, res) => {
    req.on("close", () => (closedOnB = true));
    sse(res);
    const after = Number((req.headers["last-event-id"] ?? "1-0").split("-")[1]);
    for (let n = after + 1; n <= 4; n++) message(res, `1-${n}`, { n });
  });
  const client = new PiCloud({ urls: [a.url, b.url], app: "chat", backoff: FAST });
  const seen = [];
  const errors = [];
  const opened = [];
  const stop = client.subscribe("room/1", { token: "tok en" }, (data, meta) => seen.push([data.n, meta.id]), {
    onError: (error, willRetry) => errors.push([error.code, willRetry]),
    onOpen: (url) => opened.push(url),
  });
  await until("four messages", () => seen.length >= 4);
  assert.deepEqual(seen, [[1, "1-1"], [2, "1-2"], [3, "1-3"], [4, "1-4"]]);
  assert.deepEqual(opened, [a.url, b.url]);
  assert.deepEqual(errors, [["network_error", true]]);
  assert.match(a.requests[0].url, /^\/_\/realtime\/chat\/room\/1\?token=tok\+en$/);
  assert.equal(a.requests[0].headers.accept, "text/event-stream");
  assert.equal(b.requests[0].headers["last-event-id"], "1-2");
  assert.match(b.requests[0].url, /last_event_id=1-2/);
  stop();
  await until("the stream to close on unsubscribe", () => closedOnB);
  assert.equal(b.requests.length, 1, "no reconnect after unsubscribe");
  await Promise.all([a.close(), b.close()]);
});

test("token_expired fetches a new token; a refused token stops the subscription", async () => {
  const server = await serve((req, res) => {
    const token = new URL(req.url, "http://x").searchParams.get("token");
    if (token === "old") return json(res, 401, { error: { code: "token_expired", message: "expired" } });
    if (token === "other-topic") return json(res, 403, { error: { code: "token_wrong_topic", message: "not for this topic" } });
    sse(res);
    res.write("event: reset\nid: 2-10\ndata: {}\n\n");
    message(res, "2-11", { ok: token });
  });
  const client = new PiCloud({ urls: [server.url], app: "chat", backoff: FAST });
  const tokens = ["old", "new"];
  let asked = 0;
  const seen = [];
  let resets = 0;
  const stop = client.subscribe("t", { getToken: async () => tokens[asked++] }, (data, meta) => seen.push([data, meta.id]), {
    onReset: () => resets++,
  });
  await until("a message with the new token", () => seen.length === 1);
  assert.deepEqual(seen, [[{ ok: "new" }, "2-11"]]);
  assert.equal(asked, 2);
  assert.equal(resets, 1);
  stop();

  const errors = [];
  const before = server.requests.length;
  const refused = client.subscribe("t", { token: "other-topic" }, () => {}, {
    onError: (error, willRetry) => errors.push([error.status, error.code, willRetry]),
  });
  await until("the refusal", () => errors.length === 1);
  assert.deepEqual(errors, [[403, "token_wrong_topic", false]]);
  // Stopped for good: a few backoff periods later, still one request.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(server.requests.length, before + 1);
  refused();
  await server.close();
});

test("backoff grows, stays within its cap and is jittered", () => {
  const options = { initialMs: 100, maxMs: 1000 };
  assert.equal(backoffDelayMs(0, options, () => 0), 50);
  assert.equal(backoffDelayMs(0, options, () => 1), 100);
  assert.equal(backoffDelayMs(3, options, () => 1), 800);
  assert.equal(backoffDelayMs(10, options, () => 1), 1000);
  assert.equal(backoffDelayMs(10, options, () => 0), 500);
  assert.equal(backoffDelayMs(1e9, options, () => 0.5), 750);
});

test("a throwing onMessage neither stops nor restarts the stream", async () => {
  const server = await serve((req, res) => {
    sse(res);
    message(res, "1-1", { n: 1 });
    message(res, "1-2", { n: 2 });
  });
  const client = new PiCloud({ urls: [server.url], app: "chat", backoff: FAST });
  const seen = [];
  const logged = [];
  const original = console.error;
  console.error = (...args) => logged.push(args.join(" "));
  try {
    const stop = client.subscribe("t", { token: "x" }, (data) => {
      seen.push(data.n);
      if (data.n === 1) throw new Error("app bug");
    });
    await until("both messages", () => seen.length === 2);
    assert.deepEqual(seen, [1, 2]);
    assert.equal(server.requests.length, 1, "no reconnect");
    assert.equal(logged.length, 1);
    assert.match(logged[0], /app bug/);
    stop();
  } finally {
    console.error = original;
  }
  await server.close();
});
