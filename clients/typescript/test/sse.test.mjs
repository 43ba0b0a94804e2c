// The SSE parser against the WHATWG event-stream rules, fed in every way a
// network can cut a stream: chunk boundaries anywhere, inside a CRLF and
// inside a UTF-8 sequence.
import { test } from "node:test";
import assert from "node:assert/strict";
import { SseParser } from "../dist/index.js";

const encoder = new TextEncoder();

/** Feeds `chunks` (byte arrays) and returns every item, with the final last id. */
function parse(chunks, lastEventId) {
  const parser = new SseParser(lastEventId);
  const items = [];
  for (const chunk of chunks) items.push(...parser.feed(chunk));
  return { items, lastEventId: parser.lastEventId };
}

function events(items) {
  return items.filter((item) => item.kind === "event").map((item) => item.event);
}

/** [stream text, expected events, expected other items] */
const CASES = [
  ["data: hello\n\n", [{ type: "message", data: "hello", id: "" }]],
  ["data: a\r\ndata: b\r\n\r\n", [{ type: "message", data: "a\nb", id: "" }]],
  ["data: a\rdata: b\r\r", [{ type: "message", data: "a\nb", id: "" }]],
  ["data:no-space\ndata:  two spaces\n\n", [{ type: "message", data: "no-space\n two spaces", id: "" }]],
  ["id: 1-5\nevent: reset\ndata: {}\n\n", [{ type: "reset", data: "{}", id: "1-5" }]],
  // The id sticks to later events until changed; an id with NUL is ignored.
  ["id: 1-1\ndata: x\n\ndata: y\n\nid: bad\u0000\ndata: z\n\n", [
    { type: "message", data: "x", id: "1-1" },
    { type: "message", data: "y", id: "1-1" },
    { type: "message", data: "z", id: "1-1" },
  ]],
  // No data: nothing dispatched (but the id still counts); "data" alone is an empty line of data.
  ["event: ping\n\ndata\n\n", [{ type: "message", data: "", id: "" }]],
  // Comments and unknown fields are not events; an unterminated event at the end is dropped.
  [": heartbeat\nfoo: bar\ndata: kept\n\ndata: dropped", [{ type: "message", data: "kept", id: "" }]],
  // A byte order mark at the start is skipped; UTF-8 text survives.
  ["\uFEFFdata: héllo 🌍 ✓\n\n", [{ type: "message", data: "héllo 🌍 ✓", id: "" }]],
  ["data: {\"a\":1}\nid: 7-42\n\n", [{ type: "message", data: "{\"a\":1}", id: "7-42" }]],
];

test("parses the event-stream format", () => {
  for (const [text, expected] of CASES) {
    const { items } = parse([encoder.encode(text)]);
    assert.deepEqual(events(items), expected, JSON.stringify(text));
  }
});

test("comments, retry and ids are reported", () => {
  const { items, lastEventId } = parse([encoder.encode(": hi\nretry: 1500\nretry: soon\nid: 3-1\n\n")]);
  assert.deepEqual(items, [
    { kind: "comment", text: "hi" },
    { kind: "retry", ms: 1500 },
  ]);
  assert.equal(lastEventId, "3-1", "a data-less event still sets the last id");
  // A resumed parser starts from the id it was given.
  const resumed = parse([encoder.encode("data: x\n\n")], "9-9");
  assert.equal(events(resumed.items)[0].id, "9-9");
});

/** Every way to cut `bytes` in two, and in three around every CR. */
function splits(bytes) {
  const out = [];
  for (let i = 0; i <= bytes.length; i++) out.push([bytes.slice(0, i), bytes.slice(i)]);
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== 13) continue;
    for (let j = i + 1; j <= bytes.length; j++) out.push([bytes.slice(0, i + 1), bytes.slice(i + 1, j), bytes.slice(j)]);
  }
  return out;
}

test("chunk boundaries anywhere give the same events", () => {
  for (const [text, expected] of CASES) {
    const bytes = encoder.encode(text);
    for (const chunks of splits(bytes)) {
      assert.deepEqual(events(parse(chunks).items), expected, `${JSON.stringify(text)} cut ${chunks.map((c) => c.length)}`);
    }
    // One byte at a time: every UTF-8 sequence and every CRLF is split.
    const bytewise = Array.from(bytes, (byte) => Uint8Array.of(byte));
    assert.deepEqual(events(parse(bytewise).items), expected, `${JSON.stringify(text)} byte by byte`);
  }
});

test("a CR ending one chunk and a LF starting the next are one line end", () => {
  const chunks = [encoder.encode("data: a\r"), encoder.encode("\ndata: b\r"), encoder.encode("\n\r"), encoder.encode("\n")];
  assert.deepEqual(events(parse(chunks).items), [{ type: "message", data: "a\nb", id: "" }]);
  // But a CR then a CR are two line ends (an empty line: dispatch).
  const twoCr = [encoder.encode("data: a\r"), encoder.encode("\r")];
  assert.deepEqual(events(parse(twoCr).items), [{ type: "message", data: "a", id: "" }]);
});

test("random cuts of a long stream", () => {
  let text = "";
  const expected = [];
  for (let i = 0; i < 200; i++) {
    const eol = ["\n", "\r\n", "\r"][i % 3];
    const data = `{"n":${i},"s":"é🌍${"x".repeat(i % 7)}"}`;
    text += `: beat${eol}id: 1-${i}${eol}data: ${data}${eol}${eol}`;
    expected.push({ type: "message", data, id: `1-${i}` });
  }
  const bytes = encoder.encode(text);
  let seed = 42;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (let round = 0; round < 50; round++) {
    const chunks = [];
    for (let at = 0; at < bytes.length; ) {
      const size = 1 + Math.floor(random() * 40);
      chunks.push(bytes.slice(at, at + size));
      at += size;
    }
    assert.deepEqual(events(parse(chunks).items), expected);
  }
});
