// Mockttp as an HTTP proxy on 127.0.0.1, for `make bench`: WebSockets to *.invalid hosts are
// echoed (thenEcho), all others passed through (thenPassThrough). Prints the port, runs until killed.
const mockttp = require("mockttp");

(async () => {
  const server = mockttp.getLocal();
  await server.start(0); // 0: a free port
  await server.forAnyWebSocket().forHostname("bench.invalid").thenEcho();
  await server.forAnyWebSocket().thenPassThrough();
  console.log(`listening at 127.0.0.1:${server.port}`);
})();
