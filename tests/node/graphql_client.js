// A GraphQL subscription client as apps write it, with either of the two clients from npm:
// `graphql-ws` (the graphql-transport-ws protocol) or Apollo's legacy
// `subscriptions-transport-ws` (subprotocol graphql-ws), over Node's `ws`, the proxy from
// HTTPS_PROXY (https-proxy-agent), the proxy's CA from NODE_EXTRA_CA_CERTS or --ca FILE. It
// knows nothing of any test: it runs its operations one after the other (--parallel: all at
// once) on one connection and prints one line per result, then exits (0 if all went, 1 on an
// error).
//
//   node graphql_client.js URL --client graphql-ws|subscriptions-transport-ws [--ca FILE]
//        [--token TOKEN] [--init-delay MS] [--keep-alive MS] [--parallel]
//        [--ops count,hello] (the default)
//
// Operations: `count` subscribes to Count(to: 3), `hello` queries Hello(name: "ann"), `news`
// subscribes to News, `rename` is the mutation Rename(name: "ann"), `nope` queries Nope and
// `broken` subscribes to Broken (no operationName in the message for these two).
//
// --keep-alive MS: graphql-ws pings every MS ms (its `keepAlive`), and the client first waits
// for three pongs; the legacy client takes MS as its `timeout` for the server's `ka` messages
// (it drops a connection that goes quiet that long), and first waits for ten of them. Lines: `count {"count":1}` per result, `count complete`, `count error
// MESSAGES`, and `closed CODE REASON` when the socket closes.
const fs = require("node:fs");
const WebSocket = require("ws");
const { HttpsProxyAgent } = require("https-proxy-agent");

const argv = process.argv.slice(2);
const url = argv[0];
const option = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const which = option("--client", "graphql-ws");
const ops = option("--ops", "count,hello").split(",");
const token = option("--token");
const initDelay = Number(option("--init-delay", "0"));
const keepAlive = Number(option("--keep-alive", "0"));
const parallel = argv.includes("--parallel");

const OPERATIONS = {
  count: {
    query: "subscription Count($to: Int!) { count(to: $to) }",
    variables: { to: 3 },
    operationName: "Count",
  },
  hello: {
    query: "query Hello($name: String!) { hello(name: $name) }",
    variables: { name: "ann" },
    operationName: "Hello",
  },
  news: { query: "subscription News { news }", operationName: "News" },
  rename: {
    query: "mutation Rename($name: String!) { rename(name: $name) }",
    variables: { name: "ann" },
    operationName: "Rename",
  },
  nope: { query: "query Nope { nope }" },
  broken: { query: "subscription Broken { broken }" },
};

const proxy = process.env.HTTPS_PROXY || process.env.https_proxy || process.env.HTTP_PROXY;
const wsOptions = { agent: proxy ? new HttpsProxyAgent(proxy) : undefined };
if (option("--ca")) wsOptions.ca = fs.readFileSync(option("--ca"));

// Both clients take a WebSocket implementation: `ws` with the proxy's agent and the CA.
const closed = [];
let kas = 0; // the legacy server's keep-alive messages seen
const kaSeen = [];
class ProxiedWebSocket extends WebSocket {
  constructor(address, protocols) {
    super(address, protocols, wsOptions);
    this.on("message", (data) => {
      let type;
      try {
        type = JSON.parse(data).type;
      } catch {
        return; // the client's own concern
      }
      if (type === "ka" && ++kas === 10) kaSeen.forEach((resolve) => resolve());
    });
    closed.push(new Promise((resolve) => this.on("close", (code, reason) => {
      out(`closed ${code} ${reason}`);
      resolve();
    })));
  }
}

const out = (line) => console.log(line);
const connectionParams = async () => {
  // unref: a client whose socket closed meanwhile need not stay for this
  if (initDelay) await new Promise((resolve) => setTimeout(resolve, initDelay).unref());
  return token ? { token } : {};
};
const messages = (errors) =>
  [].concat(errors).map((e) => e.message || e.reason || String(e)).join("; ");

// Run one operation through `subscribe(payload, sink)`; resolves when it completed or failed.
function run(name, subscribe) {
  return new Promise((resolve) => {
    subscribe(OPERATIONS[name], {
      next: (result) => out(`${name} ${JSON.stringify(result.errors ? result : result.data)}`),
      error: (error) => {
        out(`${name} error ${messages(error)}`);
        resolve();
      },
      complete: () => {
        out(`${name} complete`);
        resolve();
      },
    });
  });
}

// The operations one after the other, or with --parallel all at once on the socket.
async function each(fn) {
  if (parallel) return Promise.all(ops.map(fn));
  for (const name of ops) await fn(name);
}

async function withGraphqlWs() {
  const { createClient } = require("graphql-ws");
  const client = createClient({
    url,
    webSocketImpl: ProxiedWebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: !keepAlive, // connects at the first operation...
    lazyCloseTimeout: 60000, // ...and keeps the socket between operations, until dispose()
    keepAlive,
  });
  if (keepAlive) {
    let pongs = 0;
    await new Promise((resolve) => client.on("pong", () => ++pongs === 3 && resolve()));
    out("pongs 3");
  }
  await each((name) => run(name, (payload, sink) => client.subscribe(payload, sink)));
  await client.dispose();
}

async function withSubscriptionsTransportWs() {
  const { SubscriptionClient } = require("subscriptions-transport-ws");
  const client = new SubscriptionClient(
    url,
    {
      connectionParams,
      reconnect: false,
      lazy: !keepAlive,
      ...(keepAlive ? { timeout: keepAlive } : {}),
      connectionCallback: (error) => error && out(`connection_error ${messages(error)}`),
    },
    ProxiedWebSocket,
  );
  if (keepAlive) {
    await new Promise((resolve) => kaSeen.push(resolve));
    out(`ka 10 ${client.status === WebSocket.OPEN ? "open" : "closed"}`);
  }
  await each((name) => run(name, (payload, sink) => client.request(payload).subscribe(sink)));
  client.close();
}

const main = which === "graphql-ws" ? withGraphqlWs : withSubscriptionsTransportWs;
main().then(
  async () => {
    await Promise.all(closed); // each socket's close line printed
    process.exit(0);
  },
  (error) => {
    console.error(`error ${error.message || error}`);
    process.exit(1);
  },
);
