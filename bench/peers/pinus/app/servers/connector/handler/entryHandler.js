// Answered by the connector itself: the peer of `mortar dev`'s gateway answering alone.
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
