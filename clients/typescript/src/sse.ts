/**
 * A Server-Sent Events parser, written to the WHATWG HTML "event stream"
 * rules, fed with bytes as they arrive from a `fetch` body.
 *
 * Chunks may split the stream anywhere: inside a UTF-8 sequence (the
 * streaming `TextDecoder` keeps the partial bytes), inside a CRLF (a CR at
 * the end of a chunk is a line end; a LF starting the next one is then
 * skipped), inside a field name or value (the partial line is kept).
 */

/** One dispatched event. */
export interface SseEvent {
  /** `event:` of the event, or `"message"`. */
  type: string;
  /** The `data:` lines joined with `\n`. */
  data: string;
  /** The last event ID when the event was dispatched (`id:` of this or an earlier event), or `""`. */
  id: string;
}

/** What feeding bytes produced, in stream order. */
export type SseItem =
  | { kind: "event"; event: SseEvent }
  | { kind: "retry"; ms: number }
  | { kind: "comment"; text: string };

const CR = 13;
const LF = 10;

export class SseParser {
  /** The last event ID, as the spec's "last event ID string" (set at dispatch). */
  lastEventId = "";

  private readonly decoder = new TextDecoder("utf-8");
  /** The unfinished line. */
  private line = "";
  /** A CR ended the previous chunk: a LF starting the next is part of it. */
  private skipLeadingLf = false;
  private data = "";
  private hasData = false;
  private eventType = "";
  private idBuffer = "";

  constructor(lastEventId = "") {
    this.lastEventId = lastEventId;
    this.idBuffer = lastEventId;
  }

  /** Feeds the next chunk; returns what it completed. */
  feed(chunk: Uint8Array): SseItem[] {
    const text = this.decoder.decode(chunk, { stream: true });
    const items: SseItem[] = [];
    let start = 0;
    let index = 0;
    if (this.skipLeadingLf && text.length > 0) {
      this.skipLeadingLf = false;
      if (text.charCodeAt(0) === LF) {
        start = 1;
        index = 1;
      }
    }
    for (; index < text.length; index++) {
      const code = text.charCodeAt(index);
      if (code !== CR && code !== LF) continue;
      this.line += text.slice(start, index);
      this.processLine(this.line, items);
      this.line = "";
      if (code === CR) {
        if (index + 1 < text.length) {
          if (text.charCodeAt(index + 1) === LF) index++;
        } else {
          this.skipLeadingLf = true;
        }
      }
      start = index + 1;
    }
    this.line += text.slice(start);
    return items;
  }

  private processLine(line: string, items: SseItem[]): void {
    if (line === "") {
      this.dispatch(items);
      return;
    }
    if (line.charCodeAt(0) === 58 /* ':' */) {
      items.push({ kind: "comment", text: line.slice(1).replace(/^ /, "") });
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\u0000")) this.idBuffer = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) items.push({ kind: "retry", ms: Number(value) });
        break;
      default:
        // Unknown fields are ignored.
        break;
    }
  }

  private dispatch(items: SseItem[]): void {
    this.lastEventId = this.idBuffer;
    if (!this.hasData) {
      this.eventType = "";
      return;
    }
    const data = this.data.endsWith("\n") ? this.data.slice(0, -1) : this.data;
    items.push({
      kind: "event",
      event: { type: this.eventType || "message", data, id: this.lastEventId },
    });
    this.data = "";
    this.hasData = false;
    this.eventType = "";
  }
}
