// A GraphQL subscription client as apps write it, with either of the two clients from npm:
// `graphql-ws` (the graphql-transport-ws protocol) or Apollo's legacy
// `subscriptions-transport-ws` (subprotocol graphql-ws), over Node's `ws`, the proxy from
// HTTPS_PROXY (https-proxy-agent), the proxy's CA from NODE_EXTRA_CA_CERTS or --ca FILE. It
// knows nothing of any test: it runs its operations one after the other on one connection and
// prints one line per result, then exits (0 if all went, 1 on an error).
//
//   node graphql_client.js URL --client graphql-ws|subscriptions-transport-ws [--ca FILE]
//        [--token TOKEN] [--init-delay MS] [--ops count,hello,news]
//
// Operations: `count` subscribes to Count(to: 3), `hello` queries Hello(name: "ann"), `news`
// subscribes to News, `nope` queries Nope and `broken` subscribes to Broken (no operationName
// in the message for these two). Lines: `count {"count":1}` per result, `count complete`, `count error
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
  nope: { query: "query Nope { nope }" },
  broken: { query: "subscription Broken { broken }" },
};

const proxy = process.env.HTTPS_PROXY || process.env.https_proxy || process.env.HTTP_PROXY;
const wsOptions = { agent: proxy ? new HttpsProxyAgent(proxy) : undefined };
if (option("--ca")) wsOptions.ca = fs.readFileSync(option("--ca"));

// Both clients take a WebSocket implementation: `ws` with the proxy's agent and the CA.
const closed = [];
class ProxiedWebSocket extends WebSocket {
  constructor(address, protocols) {
    super(address, protocols, wsOptions);
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

async function withGraphqlWs() {
  const { createClient } = require("graphql-ws");
  const client = createClient({
    url,
    webSocketImpl: ProxiedWebSocket,
    connectionParams,
    retryAttempts: 0,
    lazy: true, // connects at the first operation...
    lazyCloseTimeout: 60000, // ...and keeps the socket between operations, until dispose()
  });
  for (const name of ops) await run(name, (payload, sink) => client.subscribe(payload, sink));
  await client.dispose();
}

async function withSubscriptionsTransportWs() {
  const { SubscriptionClient } = require("subscriptions-transport-ws");
  const client = new SubscriptionClient(
    url,
    {
      connectionParams,
      reconnect: false,
      lazy: true,
      connectionCallback: (error) => error && out(`connection_error ${messages(error)}`),
    },
    ProxiedWebSocket,
  );
  for (const name of ops) {
    await run(name, (payload, sink) => client.request(payload).subscribe(sink));
  }
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
