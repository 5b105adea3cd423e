// The client in headless Chromium (Debian's `chromium`, driven by playwright-core) against a real
// `mortar dev`: the built package bundled for the browser, then the demo page clicked through.
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { chromium } from "playwright-core";
import { serveDemo } from "../examples/web/serve.mjs";
import { account, DevNode } from "./dev-node.mjs";

const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
if (!existsSync(executablePath)) {
  throw new Error(`no Chromium at ${executablePath}: install Debian's chromium (scripts/test.sh does) or set CHROMIUM`);
}

let node;
let browser;
let page;
let server;

before(async () => {
  node = await DevNode.start();
  browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
  // The package as a browser loads it: dist/index.js bundled (its `ws` import is Node's only).
  const bundle = await build({
    stdin: { contents: 'import * as mortar from "./dist/index.js"; window.mortar = mortar;', resolveDir: fileURLToPath(new URL("..", import.meta.url)) },
    bundle: true,
    format: "esm",
    platform: "browser",
    external: ["ws"],
    write: false,
  });
  const js = bundle.outputFiles[0].contents;
  server = createServer((req, res) => {
    if (req.url === "/mortar.js") res.writeHead(200, { "content-type": "text/javascript" }).end(js);
    else res.writeHead(200, { "content-type": "text/html" }).end('<!doctype html><script type="module" src="/mortar.js"></script>');
  });
  await new Promise((ready) => server.listen(0, "127.0.0.1", ready));
  page = await browser.newPage();
  page.on("pageerror", (error) => console.error("page error:", error));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => window.mortar !== undefined);
});

after(async () => {
  await browser?.close();
  await new Promise((done) => (server ? server.close(done) : done()));
  await node?.close();
});

test("in Chromium: typed calls, a push between two clients, an error with its reason", async () => {
  const result = await page.evaluate(
    async ({ url, a, b }) => {
      const { connect, MortarError } = window.mortar;
      const password = "correct horse battery";
      const join = async (name) => {
        const client = await connect(url);
        await client.user.register({ account: name, password });
        const login = await client.request("user.login", { account: name, password });
        return { client, userId: login.userId };
      };
      const alice = await join(a);
      const bob = await join(b);
      const pack = await alice.client.pack.query();
      const pushed = new Promise((resolve) => bob.client.on("friend.request", resolve));
      await alice.client.friend.request({ userId: BigInt(bob.userId) });
      const push = await pushed;
      let error;
      try {
        await alice.client.request("pack.use", { itemId: 1, count: 1 });
      } catch (e) {
        error = { isMortar: e instanceof MortarError, code: e.code, name: e.name, reason: e.reason };
      }
      await alice.client.close();
      await bob.client.close();
      return { items: pack.items.length, from: push.userId, alice: alice.userId, error, socket: typeof WebSocket };
    },
    { url: node.url, a: account("web"), b: account("web") },
  );
  assert.ok(result.items > 0);
  assert.equal(result.from, result.alice);
  assert.deepEqual(result.error, { isMortar: true, code: 2, name: "BAD_REQUEST", reason: "item 1 is not usable" });
});

test("in Chromium: a request timing out, a restarted node resumed, a kick on a second login", async () => {
  const name = account("web");
  const setup = await page.evaluate(
    async ({ url, name }) => {
      const { connect } = window.mortar;
      const client = await connect(url, { reconnect: { minDelayMs: 100, maxDelayMs: 500 }, pingIntervalMs: 0 });
      await client.user.register({ account: name, password: "correct horse battery" });
      const login = await client.user.login({ account: name, password: "correct horse battery" });
      window.events = [];
      client.on("kick", (kick) => window.events.push(`kick ${kick.name}`));
      client.on("reconnected", (event) => window.events.push(`reconnected ${event.resumed}`));
      client.on("closed", (event) => window.events.push(`closed ${event.code}`));
      window.player = client;
      return { userId: login.userId.toString() };
    },
    { url: node.url, name },
  );

  // A frozen node: the request times out in the page.
  await node.pause();
  let timedOut;
  try {
    timedOut = await page.evaluate(() =>
      window.player.echo.say({ text: "late" }, { timeoutMs: 300 }).then(
        () => "answered",
        (error) => `${error.name}: ${error.reason}`,
      ),
    );
  } finally {
    node.resume();
  }
  assert.equal(timedOut, "TIMEOUT: no reply within 300 ms");

  // The node restarts: the page's client is kicked (shutdown), reconnects, resumes, and calls on.
  await node.restart();
  await page.waitForFunction(() => window.events.includes("reconnected true"), null, { timeout: 10_000 });
  const profile = await page.evaluate(() => window.player.user.profile().then((p) => p.userId.toString()));
  assert.equal(profile, setup.userId);

  // A second login of the same account elsewhere: the first is kicked and stays closed.
  await page.evaluate(
    async ({ url, name }) => {
      const other = await window.mortar.connect(url);
      await other.user.login({ account: name, password: "correct horse battery" });
      window.other = other;
    },
    { url: node.url, name },
  );
  await page.waitForFunction(() => window.events.includes("closed 1008"), null, { timeout: 10_000 });
  const events = await page.evaluate(() => window.events);
  assert.deepEqual(events, ["kick SERVER_SHUTDOWN", "reconnected true", "kick LOGGED_IN_ELSEWHERE", "closed 1008"]);
  await page.evaluate(() => window.other.close());
});

/** Opens the demo page served by `demo` in a new tab (kept in `tabs`) and logs `name` in. */
async function demoLogin(demo, tabs, name, width = 1100) {
  const tab = await browser.newPage({ viewport: { width, height: 560 } });
  tabs.push(tab);
  tab.on("pageerror", (error) => console.error("demo page error:", error));
  await tab.goto(demo.url);
  await tab.waitForSelector("#status:text('connected')");
  await tab.fill("#account", name);
  await tab.fill("#password", "correct horse battery");
  await tab.click("#enter");
  await tab.waitForSelector("#items li");
  return tab;
}

test("the demo page: log in, chat, a friend with an online dot, a potion", async () => {
  const demo = await serveDemo({ port: 0, gateway: node.url });
  const tabs = [];
  const login = (name) => demoLogin(demo, tabs, name);
  try {
    const anaName = account("ana");
    const ana = await login(anaName);
    const ben = await login(account("ben"));
    // Ana opens a group and says hello; it shows in her chat.
    await ana.fill("#text", "hello from the demo");
    await ana.click("#say");
    await ana.waitForSelector("#messages div:has-text('hello from the demo')");
    // Ben joins it by id and answers; Ana sees it through the group.message push.
    const groupId = /id (\d+)/.exec(await ana.textContent("#group-label"))[1];
    await ben.fill("#group-id", groupId);
    await ben.click("#join");
    await ben.waitForSelector(`#group-label:has-text('${groupId}')`);
    await ben.fill("#text", "hi ana");
    await ben.click("#say");
    await ana.waitForSelector("#messages div:has-text('hi ana')");
    // Ana asks Ben to be friends; Ben accepts; Ana's list shows him with a green (online) dot.
    await ana.fill("#friend-id", await ben.textContent("#my-id"));
    await ana.click("#add-friend");
    await ben.click("#friends li button:text('Accept')");
    await ana.waitForSelector("#friends li .dot.on");
    // Ana uses a potion: the pack answers and the count drops.
    const potions = await ana.textContent("#items li:has-text('Small Potion')");
    await ana.click("#items li:has-text('Small Potion') button");
    await ana.waitForFunction((text) => !document.querySelector("#items").textContent.includes(text), potions);
    // What README.md shows (MORTAR_DEMO_SCREENSHOT=docs/demo.png npm test to renew it).
    const shot = process.env.MORTAR_DEMO_SCREENSHOT ?? join(tmpdir(), "mortar-demo.png");
    await ana.screenshot({ path: shot });
    // Ben leaves: his dot on Ana's list goes grey from the friend.offline push.
    await ben.close();
    await ana.waitForSelector("#friends li .dot:not(.on)");
    // Ana logs in in another tab: this one says it was kicked and why.
    await login(anaName);
    await ana.waitForSelector("#status:text('kicked: LOGGED_IN_ELSEWHERE (reload to play here)')");
  } finally {
    for (const tab of tabs) await tab.close();
    await demo.close();
  }
});

test("the demo's arena: two tabs matchmake into one duel, see each other move, and one wins", async () => {
  const demo = await serveDemo({ port: 0, gateway: node.url });
  const tabs = [];
  const login = (name) => demoLogin(demo, tabs, name, 1300);
  try {
    const red = await login(account("red"));
    const blue = await login(account("blue"));
    await red.click("#find-duel");
    await red.waitForSelector("#arena-status:text('waiting for an opponent…')");
    await blue.click("#find-duel");
    // Both are matched into one room and see both players on the board, each in their own colour.
    for (const tab of [red, blue]) {
      await tab.waitForSelector("#arena-status:has-text('in the room')");
      await tab.waitForSelector("#board div.me");
      await tab.waitForSelector("#board div.them");
    }
    assert.equal(await red.textContent("#room-label"), await blue.textContent("#room-label"));
    // Red walks toward blue with the pad; blue's board shows red's moves (the 10 Hz state).
    const column = (tab, who) => tab.$eval(`#board div.${who}`, (cell) => Number(cell.dataset.x));
    const start = await column(blue, "them");
    const toward = (await column(red, "them")) > (await column(red, "me")) ? "→" : "←";
    await red.click(`#pad button:text('${toward}')`);
    await blue.waitForFunction((x) => Number(document.querySelector("#board div.them")?.dataset.x) !== x, start);
    // Then into blue three times: red wins, blue loses.
    for (let hit = 0; hit < 3; hit++) {
      await red.click(`#pad button:text('${toward}')`);
      await red.waitForTimeout(250);
    }
    await red.waitForSelector("#arena-status:text('You won!')");
    await blue.waitForSelector("#arena-status:text('You lost.')");
    await red.waitForSelector("#find-duel:visible");
  } finally {
    for (const tab of tabs) await tab.close();
    await demo.close();
  }
});
