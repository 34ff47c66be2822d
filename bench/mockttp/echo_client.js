// The bench's Node client (`make bench BENCH_ARGS="--transports --client node"`): echoes over one
// connection through a proxy with `ws`, as a Node app does, the proxy reached by CONNECT.
//
// node echo_client.js URL PROXY|- PAYLOAD_FILE N MAX_SECS WINDOW WARMUP DEFLATE CA_FILE,...
//
// Runs WARMUP round trips, prints "ready" and waits for a line on stdin (the caller reads the
// proxy's CPU time then), then sends N messages, WINDOW in flight, stopping early after MAX_SECS
// and waiting for the echoes in flight; prints {"received": ..., "secs": ...} and exits.
// DEFLATE=1 offers permessage-deflate and compresses every message (threshold 0, as browsers and
// python-websockets do; ws alone compresses only from 1 KiB).
const fs = require("fs");
const readline = require("readline");
const WebSocket = require("ws");
const { HttpsProxyAgent } = require("https-proxy-agent");

const [url, proxy, payloadFile, n, maxSecs, window, warmup, deflate, cas] = process.argv.slice(2);
const payload = fs.readFileSync(payloadFile, "utf8");
const ws = new WebSocket(url, {
  agent: proxy === "-" ? undefined : new HttpsProxyAgent(proxy),
  ca: cas.split(",").map((f) => fs.readFileSync(f)),
  perMessageDeflate: deflate === "1" ? { threshold: 0 } : false,
  maxPayload: 0,
});

let onMessage = () => {};
ws.on("message", () => onMessage());
ws.on("error", (e) => {
  console.error(`echo_client: ${e.message}`);
  process.exit(1);
});

function roundTrips(count) {
  return new Promise((resolve) => {
    let left = count;
    if (left === 0) return resolve();
    onMessage = () => (--left === 0 ? resolve() : ws.send(payload));
    ws.send(payload);
  });
}

function pipelined() {
  return new Promise((resolve) => {
    const stopAt = performance.now() + Number(maxSecs) * 1000;
    let sent = 0;
    let received = 0;
    let stopped = false;
    const send = () => {
      if (sent >= Number(n) || performance.now() > stopAt) stopped = true;
      else {
        sent++;
        ws.send(payload);
      }
    };
    onMessage = () => {
      received++;
      if (!stopped) send();
      if (stopped && received === sent) resolve(received);
    };
    for (let i = 0; i < Number(window); i++) send();
  });
}

ws.on("open", async () => {
  await roundTrips(Number(warmup));
  console.log("ready");
  const lines = readline.createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once("line", resolve));
  lines.close();
  const t0 = performance.now();
  const received = await pipelined();
  const secs = (performance.now() - t0) / 1000;
  console.log(JSON.stringify({ received, secs }));
  ws.close();
  ws.on("close", () => process.exit(0));
});
