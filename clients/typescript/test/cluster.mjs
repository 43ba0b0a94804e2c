// A real PiCloud cluster for the client's tests: `picloud serve` processes
// (the debug binary cargo builds, or $PICLOUD_BIN) on loopback ports, joined
// the way the README's cluster recipe does, killed for real.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, openSync } from "node:fs";
import net from "node:net";
import dgram from "node:dgram";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, "../../..");
export const CLIENT_DIST = path.resolve(here, "../dist");

/** The `picloud` binary: $PICLOUD_BIN, else the workspace's debug build. */
export function picloudBin() {
  return process.env.PICLOUD_BIN ?? path.join(REPO, "target/debug/picloud");
}

/** Why these tests cannot run here, or undefined. */
export function missingBinary() {
  const bin = picloudBin();
  return existsSync(bin) ? undefined : `no picloud binary at ${bin}: run \`cargo build -p picloud\` first (or set PICLOUD_BIN)`;
}

/** Polls `probe` (async, truthy when done) every 25 ms until `ms` pass. */
export async function eventually(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      if (await probe()) return;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Whether `port` is free for TCP and UDP on 127.0.0.1 (QUIC peers use UDP). */
async function portFree(port) {
  const tcp = await new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
  if (!tcp) return false;
  return new Promise((resolve) => {
    const socket = dgram.createSocket("udp4");
    socket.once("error", () => resolve(false));
    socket.bind(port, "127.0.0.1", () => socket.close(() => resolve(true)));
  });
}

let nextPort = 20_000 + ((process.pid * 7919) % 8000);
/** A port below Linux's ephemeral range, so no outgoing socket takes it first. */
async function freePort() {
  for (let tries = 0; tries < 10_000; tries++) {
    const port = nextPort++;
    if (nextPort >= 32_000) nextPort = 20_000;
    if (await portFree(port)) return port;
  }
  throw new Error("no free port");
}

export class Node {
  constructor(dir, index) {
    this.dir = path.join(dir, `node${index}`);
    this.dataDir = path.join(this.dir, "data");
    this.logPath = path.join(dir, `node${index}.log`);
    this.child = undefined;
  }

  async ports() {
    this.httpPort = await freePort();
    this.peerPort = await freePort();
  }

  get url() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  get peer() {
    return `127.0.0.1:${this.peerPort}`;
  }

  get adminKey() {
    return readFileSync(path.join(this.dataDir, "admin.key"), "utf8").trim();
  }

  log() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, "utf8") : "";
  }

  async start(extraArgs = []) {
    const log = openSync(this.logPath, "a");
    const env = { ...process.env };
    for (const name of ["PICLOUD_ADMIN_KEY", "PICLOUD_SECRET_KEY", "PICLOUD_SECRET_KEY_PREVIOUS", "PICLOUD_URL", "PICLOUD_KEY"]) delete env[name];
    this.child = spawn(
      picloudBin(),
      ["serve", "--data-dir", this.dataDir, "--http", `127.0.0.1:${this.httpPort}`, "--peer", this.peer, ...extraArgs],
      { env, stdio: ["ignore", log, log] },
    );
    const child = this.child;
    await eventually(`node ${this.url} healthy`, async () => {
      if (child.exitCode !== null) throw new Error(`picloud exited with ${child.exitCode}:\n${this.log()}`);
      const response = await fetch(`${this.url}/_/health`, { signal: AbortSignal.timeout(2000) });
      if (!response.ok) return false;
      const body = await response.json();
      return Number.isInteger(body.leader);
    });
  }

  /** `kill -9`, and wait until the process is gone. */
  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.child = undefined;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }

  /** An admin API request to this node. */
  async admin(method, apiPath, body) {
    const response = await fetch(`${this.url}/_/api/v1${apiPath}`, {
      method,
      headers: { authorization: `Bearer ${this.adminKey}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = text;
    }
    return { status: response.status, body: parsed };
  }
}

/**
 * Starts `count` nodes: node 1 alone, the others joining through the
 * previous one with node 1's join token; waits until all are voters.
 */
export async function startCluster(count = 3) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "picloud-client-"));
  const nodes = [];
  for (let index = 1; index <= count; index++) {
    const node = new Node(dir, index);
    await node.ports();
    nodes.push(node);
  }
  const cluster = {
    dir,
    nodes,
    async stop() {
      await Promise.all(nodes.map((node) => node.kill()));
      rmSync(dir, { recursive: true, force: true });
    },
    logs() {
      return nodes.map((node, index) => `--- node ${index + 1} ---\n${node.log()}`).join("\n");
    },
  };
  try {
    const [first] = nodes;
    await first.start();
    const { body } = await first.admin("GET", "/cluster/token");
    for (let index = 1; index < count; index++) {
      await nodes[index].start(["--join", nodes[index - 1].peer, "--join-token", body.token]);
    }
    await eventually(`${count} voters`, async () => {
      const status = await first.admin("GET", "/cluster/status");
      const roles = (status.body.nodes ?? []).map((node) => node.role);
      return roles.length === count && roles.filter((role) => role === "leader").length === 1 && roles.every((role) => role === "leader" || role === "follower");
    });
  } catch (error) {
    const logs = cluster.logs();
    await cluster.stop();
    throw new Error(`${error.message}\n${logs}`);
  }
  return cluster;
}

/**
 * Deploys `app` through `node`: `files` (path → text) and `publicFiles`
 * (path below public/ → Buffer or text, sent as base64).
 */
export async function deploy(node, app, files, publicFiles = {}) {
  const publicBase64 = Object.fromEntries(Object.entries(publicFiles).map(([name, content]) => [name, Buffer.from(content).toString("base64")]));
  const { status, body } = await node.admin("POST", `/apps/${app}/deploys`, { files, public: publicBase64 });
  if (status !== 200) throw new Error(`deploying ${app}: ${status} ${JSON.stringify(body)}`);
}

/** The built client's files, for an app's public/picloud/ folder. */
export function clientFiles() {
  return Object.fromEntries(
    readdirSync(CLIENT_DIST)
      .filter((name) => name.endsWith(".js"))
      .map((name) => [`picloud/${name}`, readFileSync(path.join(CLIENT_DIST, name))]),
  );
}

/** Lua of the realtime test app: publish through a route, mint tokens through another. */
export const REALTIME_SCRIPTS = {
  "publish.lua": `return function(req)
  local topic = "chat/" .. req.params.room
  if req.query.ephemeral then
    pubsub.publish(topic, req.json)
    return { json = { ok = true } }
  end
  return { json = { id = pubsub.publish_durable(topic, req.json) } }
end`,
  "token.lua": `return function(req)
  return { json = { token = realtime.token("chat/" .. req.params.room, { ttl = 300 }) } }
end`,
};

/** `[[route]]` tables of a manifest, one per `[method, path, script]`. */
export function routesToml(routes) {
  return routes.map(([method, path, script]) => `[[route]]\nmethod = "${method}"\npath = "${path}"\nscript = "${script}"\n`).join("");
}

/** Manifest lines of the realtime test app (after its name). */
export const REALTIME_MANIFEST = `
[[topic]]
name = "chat/*"
auth = "token"
retain = 1000
${routesToml([
  ["POST", "/publish/:room", "publish.lua"],
  ["GET", "/token/:room", "token.lua"],
])}`;
