// Reached through the connector and Pinus RPC: the peer of mortar's gateway -> worker relay.
class Handler {
  constructor(app) {
    this.app = app;
  }

  async echo(msg) {
    return { code: 200, text: msg.text };
  }
}

exports.default = function (app) {
  return new Handler(app);
};
