#!/usr/bin/env node
// `npm run demo`: builds the demo page (esbuild) and serves it on http://127.0.0.1:8080/, against
// the `mortar dev` on ws://127.0.0.1:4000/ws — started here from the repository (`cargo run
// --release -p mortar-cli -- dev`) unless one already listens there. Options: --port N,
// --gateway URL (a gateway of your own; nothing is started).
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { connect as tcp } from "node:net";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));

/** Serves the demo page on 127.0.0.1:`port` (0: a free port); resolves with its URL and `close`. */
export async function serveDemo({ port = 8080, gateway } = {}) {
  const bundle = await build({
    entryPoints: [join(here, "app.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    external: ["ws"],
    write: false,
  });
  const files = {
    "/": ["text/html; charset=utf-8", readFileSync(join(here, "index.html"))],
    "/app.js": ["text/javascript; charset=utf-8", bundle.outputFiles[0].contents],
  };
  const server = createServer((req, res) => {
    const file = files[new URL(req.url, "http://x").pathname];
    if (!file) {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": file[0], "cache-control": "no-store" }).end(file[1]);
  });
  await new Promise((ready) => server.listen(port, "127.0.0.1", ready));
  const query = gateway ? `?gateway=${encodeURIComponent(gateway)}` : "";
  return {
    url: `http://127.0.0.1:${server.address().port}/${query}`,
    close: () => new Promise((done) => server.close(done)),
  };
}

function listening(host, port) {
  return new Promise((answer) => {
    const socket = tcp({ host, port }, () => {
      socket.end();
      answer(true);
    });
    socket.on("error", () => answer(false));
  });
}

async function main() {
  const args = process.argv.slice(2);
  const option = (name) => {
    const at = args.indexOf(name);
    return at >= 0 ? args[at + 1] : undefined;
  };
  let gateway = option("--gateway");
  if (!gateway) {
    gateway = "ws://127.0.0.1:4000/ws";
    if (!(await listening("127.0.0.1", 4000))) {
      const repo = resolve(here, "../../../..");
      console.log("demo: starting mortar dev (cargo run --release -p mortar-cli -- dev) in", repo);
      // Its own process group, so that stopping the demo stops cargo and the node it runs.
      const dev = spawn("cargo", ["run", "--release", "-p", "mortar-cli", "--", "dev"], {
        cwd: repo,
        stdio: ["ignore", "pipe", "inherit"],
        detached: true,
      });
      process.on("exit", () => {
        try {
          process.kill(-dev.pid, "SIGTERM");
        } catch {
          // already gone
        }
      });
      for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) process.on(signal, () => process.exit(0));
      await new Promise((ready, fail) => {
        dev.on("exit", (code) => fail(new Error(`mortar dev exited (${code})`)));
        dev.stdout.on("data", (chunk) => {
          process.stdout.write(chunk);
          if (String(chunk).includes("gateway listening on")) ready();
        });
      });
    }
  }
  const demo = await serveDemo({ port: Number(option("--port") ?? 8080), gateway: option("--gateway") });
  console.log(`demo: open ${demo.url} (Ctrl-C stops)`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((error) => {
    console.error(`demo: ${error.message}`);
    process.exit(1);
  });
}
