// Mockttp as an HTTP proxy, for `make bench`: WebSockets to bench.invalid are echoed (thenEcho),
// all others passed through (thenPassThrough). Prints its port, runs until killed.
const mockttp = require("mockttp");

(async () => {
  const server = mockttp.getLocal();
  await server.start(0); // 0: a free port
  await server.forAnyWebSocket().forHostname("bench.invalid").always().thenEcho();
  await server.forAnyWebSocket().always().thenPassThrough();
  console.log(`listening at 127.0.0.1:${server.port}`);
})();
