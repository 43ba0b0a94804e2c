// PiCloud dashboard: progressive enhancement only. Every page works without
// this file; live views (log tails over EventSource) hook in here.
"use strict";

/** One log line as the server draws it (logs.rs), built with DOM calls only. */
function logLine(line) {
  const item = document.createElement("li");
  item.dataset.key = `${line.node}:${line.seq}`;
  item.dataset.level = line.level;
  const time = document.createElement("time");
  time.dataset.tsMs = String(line.ts_ms);
  time.textContent = new Date(line.ts_ms).toUTCString();
  const node = document.createElement("span");
  node.className = "node";
  node.textContent = `node ${line.node}`;
  const level = document.createElement("span");
  level.className = "level";
  level.textContent = line.level;
  const message = document.createElement("span");
  message.className = "message";
  message.textContent = line.message;
  item.append(time, " ", node, " ", level, " ", message);
  return item;
}

/** Appends an app's new log lines from its live stream; keeps the last data-lines-max. */
function followLogs(list) {
  const max = Number(list.dataset.linesMax) || 500;
  const status = document.getElementById("log-status");
  const seen = new Set([...list.children].map((item) => item.dataset.key));
  const say = (text) => {
    if (!status) return;
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = text;
    status.append(note);
    while (status.children.length > 5) status.firstElementChild.remove();
  };
  const source = new EventSource(list.dataset.live);
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    const key = `${line.node}:${line.seq}`;
    if (seen.has(key)) return;
    seen.add(key);
    document.getElementById("no-lines")?.remove();
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    list.append(logLine(line));
    while (list.children.length > max) {
      seen.delete(list.firstElementChild.dataset.key);
      list.firstElementChild.remove();
    }
    if (stick) list.scrollTop = list.scrollHeight;
  });
  source.addEventListener("unavailable", (event) => {
    say(`Node ${JSON.parse(event.data).node} stopped answering: its new lines are missing.`);
  });
  source.addEventListener("lagged", (event) => {
    const { node, skipped } = JSON.parse(event.data);
    say(`${skipped} lines of node ${node} were skipped (the page fell behind).`);
  });
  list.dataset.following = "true";
}

/** Redraws the metrics page's charts from the page itself, every data-refresh-ms. */
function refreshCharts(charts) {
  const every = Number(charts.dataset.refreshMs) || 5000;
  setInterval(async () => {
    try {
      const response = await fetch(window.location.href, { credentials: "same-origin" });
      if (!response.ok) return;
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("charts");
      if (fresh) charts.replaceChildren(...fresh.childNodes);
    } catch {
      // The next tick tries again.
    }
  }, every);
}

document.addEventListener("DOMContentLoaded", () => {
  // Forms marked data-confirm ask once more before they post (the server
  // asks too, with its own confirmation page, when JavaScript is off).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
  const logs = document.querySelector("ol[data-live]");
  if (logs && "EventSource" in window) followLogs(logs);
  const charts = document.getElementById("charts");
  if (charts?.dataset.refreshMs) refreshCharts(charts);
});
