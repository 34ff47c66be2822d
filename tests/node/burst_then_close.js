// Node's `ws` as apps use it (permessage-deflate offered, the proxy from HTTPS_PROXY): sends
// N text messages in a loop, closes at once, and prints how many messages came back before
// the close, and the close's code and reason.
const WebSocket = require("ws");
const { HttpsProxyAgent } = require("https-proxy-agent");

const [url, count] = process.argv.slice(2);
const proxy = process.env.HTTPS_PROXY || process.env.https_proxy;
const ws = new WebSocket(url, { agent: proxy ? new HttpsProxyAgent(proxy) : undefined });
const received = [];

ws.on("open", () => {
  for (let i = 0; i < Number(count); i++) ws.send(`message ${i}`);
  ws.close(1000, "done");
});
ws.on("message", (data) => received.push(data.toString()));
ws.on("close", (code, reason) => {
  const inOrder = received.every((m, i) => m === `message ${i}`);
  console.log(`received ${received.length} in order ${inOrder} close ${code} ${reason}`);
});
ws.on("error", (error) => {
  console.error(`error ${error.message}`);
  process.exitCode = 1;
});
