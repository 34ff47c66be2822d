// A Node WebSocket client app, as apps are written: `ws`, and the proxy from HTTPS_PROXY.
// Prints what it receives, one line per message, then how the socket closed.
const WebSocket = require("ws");
const { HttpsProxyAgent } = require("https-proxy-agent");

const proxy = process.env.HTTPS_PROXY || process.env.https_proxy;
const ws = new WebSocket(process.argv[2], { agent: proxy ? new HttpsProxyAgent(proxy) : undefined });

ws.on("open", () => ws.send(JSON.stringify({ subscribe: "prices" })));
ws.on("message", (data, isBinary) =>
  console.log(isBinary ? `binary ${data.toString("hex")}` : `text ${data}`),
);
ws.on("close", (code, reason) => console.log(`close ${code} ${reason}`));
ws.on("error", (error) => {
  console.error(`error ${error.message}`);
  process.exitCode = 1;
});
