// Starts a real `mortar dev` for the tests: the repository's debug binary (or $MORTAR_BIN), its
// store in a scratch folder, the gateway and the admin listener on free loopback ports.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(fileURLToPath(import.meta.url), "../../../..");
export const mortarBin = process.env.MORTAR_BIN ?? join(repo, "target/debug/mortar");

/** A `mortar dev` process; `restart()` stops it and starts it again on the same port and store. */
export class DevNode {
  /** `env`: config overrides, e.g. `{ MORTAR_GATEWAY__RATE_PER_SEC: "20" }`. */
  static async start(env = {}) {
    const node = new DevNode(mkdtempSync(join(tmpdir(), "mortar-ts-")), env);
    await node.spawn("127.0.0.1:0");
    return node;
  }

  constructor(data, env) {
    this.data = data;
    this.env = env;
  }

  spawn(listen) {
    this.child = spawn(mortarBin, ["dev", "--listen", listen, "--data", this.data], {
      cwd: repo,
      env: { ...nodeEnv(), ...this.env, MORTAR_ADMIN__LISTEN: "127.0.0.1:0", RUST_LOG: process.env.RUST_LOG ?? "warn" },
      stdio: ["ignore", "pipe", "inherit"],
    });
    return new Promise((resolveReady, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`mortar dev did not print its gateway line: ${out}`)), 30_000);
      this.child.on("exit", (code) => reject(new Error(`mortar dev exited (${code}): ${out}`)));
      this.child.stdout.on("data", (chunk) => {
        out += chunk;
        const match = /gateway listening on (ws:\/\/\S+)/.exec(out);
        if (match && !this.url) {
          this.url = match[1];
          this.listen = new URL(this.url).host;
        }
        if (match) {
          clearTimeout(timer);
          resolveReady();
        }
      });
    });
  }

  /** Stops the node (SIGTERM: players get `sys.kick SERVER_SHUTDOWN`) and waits for its exit. */
  stop(signal = "SIGTERM") {
    const child = this.child;
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    return new Promise((done) => {
      child.once("exit", () => done());
      child.kill(signal);
    });
  }

  /** Stops the node (`signal`: SIGTERM by default, SIGKILL for a crash) and starts it again. */
  async restart(signal = "SIGTERM") {
    await this.stop(signal);
    await this.spawn(this.listen);
  }

  /**
   * Freezes the process (a node that stops answering without closing anything), and waits until
   * every one of its threads is stopped: a thread busy on another core stops a moment after the
   * signal, and a request sent in that moment would still be answered.
   */
  async pause() {
    this.child.kill("SIGSTOP");
    const tasks = `/proc/${this.child.pid}/task`;
    if (!existsSync(tasks)) return new Promise((resolve) => setTimeout(resolve, 50));
    const stopped = () =>
      readdirSync(tasks).every((task) => {
        try {
          // The state follows the command name, which is in parentheses.
          const stat = readFileSync(`${tasks}/${task}/stat`, "utf8");
          return /^[tT]/.test(stat.slice(stat.lastIndexOf(")") + 2));
        } catch {
          return true; // the thread ended
        }
      });
    while (!stopped()) await new Promise((resolve) => setTimeout(resolve, 1));
  }

  resume() {
    this.child.kill("SIGCONT");
  }

  async close() {
    this.resume();
    await this.stop();
    rmSync(this.data, { recursive: true, force: true });
  }
}

/** This process's environment without MORTAR_BIN, which the node would warn about as an unknown key. */
function nodeEnv() {
  const { MORTAR_BIN: _, ...env } = process.env;
  return env;
}

let accounts = 0;
/** A fresh account name for this run. */
export function account(prefix = "ts") {
  accounts += 1;
  return `${prefix}_${process.pid}_${accounts}`;
}
