// Mockttp as an HTTP proxy, for `make bench`: WebSockets to bench.invalid are echoed (thenEcho),
// all others passed through (thenPassThrough). Prints its port, runs until killed.
//
// `node proxy.js --ca PATH`: also intercepts TLS (wss:// through CONNECT) with a CA generated at
// start, whose certificate it writes to PATH for the client to trust; the pass-through then
// accepts any upstream certificate (the bench's echo server has a self-signed one).
const fs = require("fs");
const mockttp = require("mockttp");

(async () => {
  const at = process.argv.indexOf("--ca");
  let https;
  if (at !== -1) {
    https = await mockttp.generateCACertificate();
    fs.writeFileSync(process.argv[at + 1], https.cert);
  }
  const server = mockttp.getLocal(https ? { https } : {});
  await server.start(0); // 0: a free port
  await server.forAnyWebSocket().forHostname("bench.invalid").always().thenEcho();
  await server
    .forAnyWebSocket()
    .always()
    .thenPassThrough(https ? { ignoreHostHttpsErrors: true } : {});
  console.log(`listening at 127.0.0.1:${server.port}`);
})();
