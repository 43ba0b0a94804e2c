// The built client against a real 3-node PiCloud cluster: calls with their
// error codes, failover when the first node is killed, and realtime topics.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PiCloud, PiCloudError } from "../dist/index.js";
import { deploy, eventually, missingBinary, REALTIME_MANIFEST, REALTIME_SCRIPTS, routesToml, startCluster } from "./cluster.mjs";

const SHOP_MANIFEST = `name = "shop"
${routesToml([
  ["GET", "/hello/:name", "hello.lua"],
  ["POST", "/orders", "order.lua"],
  ["GET", "/stock", "stock.lua"],
])}`;

const SHOP_SCRIPTS = {
  "hello.lua": `return function(req) return { json = { hello = req.params.name, q = req.query.q } } end`,
  "order.lua": `return function(req)
  if type(req.json) ~= "table" or not req.json.item then
    return { status = 400, json = { error = { code = "invalid_order", message = "item is required" } } }
  end
  return { status = 201, json = { n = kv.incr("orders", 1), item = req.json.item } }
end`,
  "stock.lua": `return function() error("warehouse offline") end`,
};

test("call against a 3-node cluster: results, codes and failover", { skip: missingBinary() }, async () => {
  const cluster = await startCluster(3);
  try {
    const [a, b, c] = cluster.nodes;
    await deploy(a, "shop", { "picloud.toml": SHOP_MANIFEST, ...SHOP_SCRIPTS });
    const client = new PiCloud({ urls: [a.url, b.url, c.url], app: "shop" });
    assert.deepEqual(await client.call("GET", "/hello/pi", { query: { q: "1" } }), { hello: "pi", q: "1" });
    assert.deepEqual(await client.call("POST", "/orders", { json: { item: "tea" } }), { n: 1, item: "tea" });
    // Codes: the app's own, the router's, a script failure's (with its request id).
    await assert.rejects(client.call("POST", "/orders", { json: {} }), { status: 400, code: "invalid_order", message: "item is required" });
    await assert.rejects(client.call("GET", "/nowhere"), { status: 404, code: "route_not_found" });
    await assert.rejects(client.call("GET", "/stock"), (error) => {
      assert.ok(error instanceof PiCloudError);
      assert.equal(error.status, 500);
      assert.equal(error.code, "script_error");
      assert.match(error.requestId ?? "", /^[0-9a-f]{16}$/);
      return true;
    });
    await assert.rejects(new PiCloud({ urls: [a.url], app: "nope" }).call("GET", "/"), { status: 404, code: "app_not_found" });

    // Kill the first node: idempotent calls move on to the next one.
    await a.kill();
    const other = new PiCloud({ urls: [a.url, b.url, c.url], app: "shop" });
    assert.deepEqual(await other.call("GET", "/hello/again"), { hello: "again" });
    // A POST is not repeated elsewhere after a network error...
    const fresh = new PiCloud({ urls: [a.url, b.url, c.url], app: "shop" });
    await assert.rejects(fresh.call("POST", "/orders", { json: { item: "cake" } }), { status: 0, code: "network_error" });
    // ...but once a node has answered, the client sticks to it, and writes
    // go through once the two survivors have a leader.
    await eventually("a write through the survivors", async () => {
      try {
        return (await other.call("POST", "/orders", { json: { item: "cake" } })).item === "cake";
      } catch (error) {
        if (error.code === "no_leader" || error.code === "quorum_lost" || error.status === 503) return false;
        throw error;
      }
    });
  } catch (error) {
    throw new Error(`${error.stack}\n${cluster.logs()}`);
  } finally {
    await cluster.stop();
  }
});

test("realtime through the client: a publish on node A reaches subscribers on B and C; a killed node's subscriber resumes on another, each message once", { skip: missingBinary() }, async (t) => {
  const cluster = await startCluster(3);
  try {
    const [a, b, c] = cluster.nodes;
    await deploy(a, "chat", { "picloud.toml": `name = "chat"\n${REALTIME_MANIFEST}`, ...REALTIME_SCRIPTS });
    const api = new PiCloud({ urls: [a.url], app: "chat" });
    const getToken = async () => (await api.call("GET", "/token/1")).token;
    const publish = (n, ephemeral) => api.call("POST", "/publish/1", { json: { n }, query: { ephemeral: ephemeral ? "1" : undefined } });

    // One subscriber on B (failing over to C), one on C.
    const onB = [];
    const onC = [];
    const errors = [];
    const opened = [];
    const stopB = new PiCloud({ urls: [b.url, c.url], app: "chat", backoff: { initialMs: 50, maxMs: 500 } }).subscribe(
      "chat/1",
      { getToken },
      (data, meta) => onB.push([data.n, meta.id]),
      { onError: (error) => errors.push(error.code), onOpen: (url) => opened.push(url) },
    );
    const stopC = new PiCloud({ urls: [c.url], app: "chat" }).subscribe("chat/1", { getToken }, (data) => onC.push(data.n));
    await eventually("both streams open", () => opened.length === 1);
    // The subscription on C has no onOpen; an ephemeral probe published until both see one proves both are live.
    await eventually("both subscribers live", async () => {
      await publish(0, true);
      return onB.length > 0 && onC.length > 0;
    });
    // Probes still in flight may land later: the durable messages are n > 0.
    const durable = () => onB.filter(([n]) => n > 0);

    for (let n = 1; n <= 5; n++) await publish(n, false);
    await eventually("five durable messages on B", () => durable().length >= 5);
    await b.kill();
    for (let n = 6; n <= 10; n++) await publish(n, false);
    await eventually("ten durable messages after B died", () => durable().length >= 10);
    assert.deepEqual(durable().map(([n]) => n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "each durable message exactly once, in order");
    assert.ok(durable().every(([, id]) => /^\d+-\d+$/.test(id)), JSON.stringify(onB));
    assert.deepEqual(opened, [b.url, c.url]);
    await eventually("C saw all ten", () => onC.filter((n) => n > 0).length >= 10);
    stopB();
    stopC();

    // Refused tokens stop the subscription with their codes.
    const refusals = [];
    const stop = new PiCloud({ urls: [c.url], app: "chat" }).subscribe("chat/1", { token: "not-a-token" }, () => {}, {
      onError: (error, willRetry) => refusals.push([error.code, willRetry]),
    });
    await eventually("the refusal", () => refusals.length === 1);
    assert.deepEqual(refusals, [["token_invalid", false]]);
    stop();
  } catch (error) {
    throw new Error(`${error.stack}\n${cluster.logs()}`);
  } finally {
    await cluster.stop();
  }
});
