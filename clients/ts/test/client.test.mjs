// The client in Node against a real `mortar dev` (started here, on loopback).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { connect, ErrorCode, MortarError, requests } from "../dist/index.js";
import { account, DevNode } from "./dev-node.mjs";

let node;
before(async () => {
  node = await DevNode.start();
});
after(async () => {
  await node?.close();
});

const password = "correct horse battery";

/** A registered, logged-in client. */
async function player(options = {}) {
  const client = await connect(node.url, options);
  const name = account();
  await client.user.register({ account: name, password });
  const login = await client.user.login({ account: name, password });
  return { client, account: name, userId: login.userId, token: login.token };
}

/** The next `route` push (or event) on `client`, within 5 s. */
function next(client, route) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${route} within 5 s`)), 5_000);
    const off = client.on(route, (value) => {
      clearTimeout(timer);
      off();
      resolve(value);
    });
  });
}

test("typed calls and generic requests in proto3 JSON", async () => {
  const { client, userId } = await player();
  // Typed: protobuf-es messages (64-bit integers as bigint).
  const pack = await client.pack.query();
  assert.ok(pack.items.length > 0, "a new player has the starter items");
  const used = await client.pack.use({ itemId: 100, count: 1 });
  assert.equal(used.itemId, 100);
  assert.equal(used.remaining, pack.items.find((item) => item.itemId === 100).count - 1);
  // Generic: the contract's request(route, body) with JSON in and out (uint64 as strings).
  const profile = await client.request("user.profile", {});
  assert.equal(profile.userId, userId.toString());
  const echoed = await client.request("echo.say", { text: "hi" });
  assert.deepEqual(echoed, { text: "hi" });
  // A module's own code is named by its proto's enum ModuleCode.
  await assert.rejects(client.pack.use({ itemId: 100, count: 999 }), (error) => {
    assert.equal(error.code, 1001);
    assert.equal(error.name, "NOT_ENOUGH_ITEMS");
    assert.equal(error.reason, "fewer than 999 of item 100 in the pack");
    return true;
  });
  // Internal routes (module to module) are not generated: the gateway would refuse them.
  assert.equal(client.pack.addItems, undefined);
  assert.equal("pack.add_items" in requests, false);
  assert.equal(typeof client.pack.use, "function");
  await client.close();
});

test("an error rejects with MortarError: numeric code, name and the server's reason", async () => {
  const client = await connect(node.url);
  await assert.rejects(client.request("user.register", { account: "x", password }), (error) => {
    assert.ok(error instanceof MortarError);
    assert.equal(error.code, ErrorCode.BAD_REQUEST);
    assert.equal(error.name, "BAD_REQUEST");
    assert.match(error.reason, /account must be 3/);
    return true;
  });
  await assert.rejects(client.pack.query(), (error) => error.code === ErrorCode.NOT_LOGGED_IN);
  await assert.rejects(client.request("pakc.query", {}), (error) => {
    assert.equal(error.code, ErrorCode.NO_ROUTE);
    assert.match(error.reason, /pack/, "the server suggests the module meant");
    return true;
  });
  await client.close();
});

test("a push reaches the other player, typed and as JSON", async () => {
  const alice = await player();
  const bob = await player();
  const json = next(bob.client, "friend.request");
  await alice.client.friend.request({ userId: bob.userId });
  // friend.request is a unary route that is also pushed: the generic handler decodes it as JSON.
  const push = await json;
  assert.equal(push.userId, alice.userId.toString());
  // The typed handler of a streaming push: bob accepts, alice hears it.
  const accepted = new Promise((resolve) => {
    const off = alice.client.friend.onAccepted((push) => {
      off();
      resolve(push);
    });
  });
  await bob.client.friend.accept({ userId: alice.userId });
  assert.equal((await accepted).userId, bob.userId);
  await alice.client.close();
  await bob.client.close();
});

test("a second login kicks the first: kick LOGGED_IN_ELSEWHERE, closed, no reconnect", async () => {
  const first = await player();
  const kicked = next(first.client, "kick");
  const closed = next(first.client, "closed");
  const second = await connect(node.url);
  await second.user.login({ account: first.account, password });
  assert.deepEqual(await kicked, { code: ErrorCode.LOGGED_IN_ELSEWHERE, name: "LOGGED_IN_ELSEWHERE" });
  const close = await closed;
  assert.equal(close.code, 1008);
  await assert.rejects(first.client.pack.query(), (error) => error.code === ErrorCode.UNAVAILABLE);
  await second.close();
});

test("pipelined requests stay in order inside a bounded window", async () => {
  const { client } = await player({ maxInFlight: 4 });
  const texts = Array.from({ length: 50 }, (_, i) => `n${i}`);
  const replies = await Promise.all(texts.map((text) => client.echo.say({ text })));
  assert.deepEqual(
    replies.map((reply) => reply.text),
    texts,
  );
  await client.close();
});

test("a request with no reply in time rejects with TIMEOUT", async () => {
  const { client } = await player({ pingIntervalMs: 0 });
  await node.pause();
  try {
    await assert.rejects(client.echo.say({ text: "late" }, { timeoutMs: 300 }), (error) => {
      assert.equal(error.code, ErrorCode.TIMEOUT);
      assert.match(error.reason, /no reply within 300 ms/);
      return true;
    });
  } finally {
    node.resume();
  }
  // The late reply is dropped; the connection goes on.
  assert.equal((await client.echo.say({ text: "again" })).text, "again");
  await client.close();
});

test("a restarted node: the client reconnects, resumes with its token, and the next call succeeds", async () => {
  const { client, userId } = await player({ reconnect: { minDelayMs: 100, maxDelayMs: 500 } });
  const kicked = next(client, "kick");
  const reconnected = next(client, "reconnected");
  await node.restart();
  assert.equal((await kicked).name, "SERVER_SHUTDOWN");
  const event = await reconnected;
  assert.equal(event.resumed, true);
  assert.equal(event.userId, userId.toString());
  const profile = await client.user.profile();
  assert.equal(profile.userId, userId);
  await client.close();
});

test("the token option resumes a session at connect; a bad token rejects", async () => {
  const { client, userId, token } = await player();
  await client.close();
  const again = await connect(node.url, { token });
  assert.equal((await again.user.profile()).userId, userId);
  await again.close();
  await assert.rejects(connect(node.url, { token: "1.nope" }), (error) => error instanceof MortarError);
});

test("a lost connection: a sent request rejects UNAVAILABLE unless marked idempotent, which is sent again", async () => {
  const { client } = await player({ pingIntervalMs: 0, reconnect: { minDelayMs: 100, maxDelayMs: 500 } });
  await node.pause();
  const once = client.echo.say({ text: "once" }).then(
    () => assert.fail("a request whose reply was lost must not be sent again"),
    (error) => error,
  );
  const again = client.echo.say({ text: "again" }, { idempotent: true });
  const reconnected = next(client, "reconnected");
  // Give the frames time to reach the frozen node's socket, then crash it and start it again.
  await new Promise((resolve) => setTimeout(resolve, 200));
  await node.restart("SIGKILL");
  const lost = await once;
  assert.equal(lost.code, ErrorCode.UNAVAILABLE);
  assert.match(lost.reason, /connection was lost before the reply/);
  assert.equal((await reconnected).resumed, true);
  assert.equal((await again).text, "again");
  await client.close();
});

test("heartbeats keep an idle connection open past the server's read timeout", async () => {
  const strict = await DevNode.start({ MORTAR_GATEWAY__READ_TIMEOUT_MS: "1000" });
  try {
    const silent = await connect(strict.url, { pingIntervalMs: 0, reconnect: false });
    const pinging = await connect(strict.url, { pingIntervalMs: 300, reconnect: false });
    const closed = next(silent, "closed");
    let lost = false;
    pinging.on("disconnected", () => (lost = true));
    assert.deepEqual(await closed, { code: 1000, reason: "idle timeout" });
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.equal(lost, false);
    assert.deepEqual(await pinging.echo.say({ text: "still here" }), { $typeName: "echo.EchoResp", text: "still here" });
    await pinging.close();
  } finally {
    await strict.close();
  }
});

test("RATE_LIMITED replies are backed off and sent again", async () => {
  const limited = await DevNode.start({ MORTAR_GATEWAY__RATE_PER_SEC: "20", MORTAR_GATEWAY__RATE_BURST: "5" });
  try {
    const client = await connect(limited.url, { maxInFlight: 64, rateLimitRetries: 10 });
    const texts = Array.from({ length: 30 }, (_, i) => `r${i}`);
    const replies = await Promise.all(texts.map((text) => client.request("echo.say", { text })));
    assert.deepEqual(
      replies.map((reply) => reply.text),
      texts,
    );
    const impatient = await connect(limited.url, { maxInFlight: 64, rateLimitRetries: 0 });
    const results = await Promise.allSettled(texts.map((text) => impatient.request("echo.say", { text })));
    assert.ok(
      results.some((r) => r.status === "rejected" && r.reason.code === ErrorCode.RATE_LIMITED),
      "without retries the limit shows",
    );
    await client.close();
    await impatient.close();
  } finally {
    await limited.close();
  }
});
