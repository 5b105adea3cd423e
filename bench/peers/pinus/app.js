// A minimal Pinus cluster for scripts/bench.sh: one connector (hybridconnector: WebSocket with
// the Pomelo packet protocol) and one backend "echo" server.
//   connector.entryHandler.echo — answered by the connector itself
//   echo.echoHandler.echo       — forwarded by the connector to the echo server over Pinus RPC
require('reflect-metadata'); // pinus-loader reads decorator metadata
const { pinus } = require('pinus');

const app = pinus.createApp({ base: __dirname });
app.set('name', 'mortar-bench');
app.configure('production|development', 'connector', function () {
  app.set('connectorConfig', {
    connector: pinus.connectors.hybridconnector,
    heartbeat: 60,
    useDict: false,
    useProtobuf: false,
  });
});
app.start();

process.on('uncaughtException', function (err) {
  console.error('uncaught exception', err && err.stack);
});
