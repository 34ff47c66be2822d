// A Socket.IO chat client as apps write it: Node's socket.io-client v4, the proxy from
// HTTPS_PROXY (https-proxy-agent, for the long-polling requests and the WebSocket alike), the
// proxy's CA from NODE_EXTRA_CA_CERTS or --ca FILE. It knows nothing of any test: it chats, and
// prints one line per thing that happened, then exits (0 if all went, 1 on an error).
//
//   node socketio_chat.js URL [--websocket-only | --polling-only] [--ca FILE] [--await-upgrade]
//                             [--steps chat,add,reverse,ask] (the default steps)
//
// Steps: `chat` emits "chat" "hi" and prints the "chat" event that comes back; `add` asks for
// 2 + 3 with an ack, `triple` for 3 x 7; `reverse` sends bytes and prints the two ack values;
// `ask` waits for the server's "question" (answered with "Ada" by ack) and its "hello"; `admin`
// connects to /admin with a token on the same connection and asks "whoami"; `picture` asks for
// a "picture" event with binary data (an attachment) and a JSON object; `pings` waits for three
// of the server's pings; `leave` asks the server to disconnect it (the last step then).
const fs = require("node:fs");
const { io } = require("socket.io-client");
const { HttpsProxyAgent } = require("https-proxy-agent");

const argv = process.argv.slice(2);
const url = argv[0];
const flag = (name) => argv.includes(name);
const option = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const steps = option("--steps", "chat,add,reverse,ask").split(",");
const WAIT = 5000;

const proxy = process.env.HTTPS_PROXY || process.env.https_proxy || process.env.HTTP_PROXY;
const options = {
  reconnection: false,
  timeout: 10000,
  agent: proxy ? new HttpsProxyAgent(proxy) : undefined,
};
if (flag("--websocket-only")) options.transports = ["websocket"];
if (flag("--polling-only")) options.transports = ["polling"];
if (option("--ca")) options.ca = fs.readFileSync(option("--ca"));

const out = (line) => console.log(line);
const hex = (data) => Buffer.from(data).toString("hex");
// JSON, with binary data (a Buffer, wherever it is) as "0x" and its bytes in hex
const show = (value) => JSON.stringify(value, (key, v) =>
  v && v.type === "Buffer" && Array.isArray(v.data) ? `0x${hex(v.data)}` : v);

function next(socket, event, wait = WAIT) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "${event}" within ${wait} ms`)), wait);
    timer.unref(); // only a guard: it keeps no client alive
    socket.once(event, (...args) => {
      clearTimeout(timer);
      resolve(args);
    });
  });
}

async function main() {
  const socket = io(url, options);
  const upgraded = new Promise((resolve) => socket.io.on("open", () => {
    out(`open ${socket.io.engine.transport.name}`);
    socket.io.engine.once("upgrade", (transport) => resolve(transport.name));
  }));
  await Promise.race([
    next(socket, "connect", 10000),
    next(socket, "connect_error", 10000).then(([error]) => { throw error; }),
  ]);
  out("connect");
  if (flag("--await-upgrade")) {
    if (socket.io.engine.transport.name !== "websocket") await upgraded;
    out(`transport ${socket.io.engine.transport.name}`);
  }
  for (const step of steps) {
    if (step === "chat") {
      const answer = next(socket, "chat");
      socket.emit("chat", "hi");
      out(`chat ${(await answer).join(" ")}`);
    } else if (step === "add") {
      out(`add ${await socket.timeout(WAIT).emitWithAck("add", 2, 3)}`);
    } else if (step === "reverse") {
      // two ack values: emitWithAck takes the first only, so a plain callback
      const [data, length] = await new Promise((resolve, reject) =>
        socket.timeout(WAIT).emit("reverse", Buffer.from([0, 1, 2]), (error, ...values) =>
          error ? reject(error) : resolve(values)));
      out(`reverse ${hex(data)} ${length}`);
    } else if (step === "ask") {
      socket.once("question", (text, ack) => {
        out(`question ${text}`);
        ack("Ada");
      });
      const hello = next(socket, "hello");
      socket.emit("ask");
      out(`hello ${(await hello).join(" ")}`);
    } else if (step === "triple") {
      out(`triple ${await socket.timeout(WAIT).emitWithAck("triple", 7)}`);
    } else if (step === "pings") {
      // three of the server's heartbeats, each answered by the client on its own
      for (let i = 1; i <= 3; i++) await next(socket.io.engine, "ping");
      out(`pings 3 ${socket.connected ? "connected" : "disconnected"}`);
    } else if (step === "picture") {
      const picture = next(socket, "picture");
      socket.emit("picture");
      out(`picture ${(await picture).map(show).join(" ")}`);
    } else if (step === "leave") {
      const closed = next(socket, "disconnect");
      socket.emit("leave");
      out(`disconnect ${(await closed)[0]}`);
      return;
    } else if (step === "admin") {
      const admin = io(`${url}/admin`, { ...options, auth: { token: "secret" } });
      await next(admin, "connect");
      out(`admin ${await admin.timeout(WAIT).emitWithAck("whoami")}`);
      admin.disconnect();
    } else {
      throw new Error(`unknown step ${step}`);
    }
  }
  const closed = next(socket, "disconnect");
  socket.disconnect();
  out(`disconnect ${(await closed)[0]}`);
}

main().then(
  () => {}, // Node exits once the client has let go (a polling client's last requests too)
  (error) => {
    console.error(`error ${error.message}${error.description ? ` ${error.description}` : ""}`);
    process.exit(1);
  },
);
