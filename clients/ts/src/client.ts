import {
  create,
  createFileRegistry,
  type DescMessage,
  fromBinary,
  fromJson,
  type JsonObject,
  type MessageInitShape,
  type MessageJsonType,
  type MessageShape,
  type Registry,
  toBinary,
  toJson,
} from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { codeName, MortarError } from "./error.js";
import {
  DescriptorsSchema,
  EmptySchema,
  ErrorCode,
  KickSchema,
  PingSchema,
  PongSchema,
  type UserMessage,
  UserMessageSchema,
} from "./gen/mortar_pb.js";
import { type Modules, modules, pushes, type RequestOptions, requests, type TypedCaller } from "./gen/routes.js";
import { LoginRespSchema, ResumeReqSchema, ResumeRespSchema } from "./gen/user_pb.js";

/** The standard WebSocket constructor (browsers, Node ≥ 22, or the `ws` package). */
export type WebSocketConstructor = new (url: string) => WebSocket;

/** How the client reconnects after a lost connection. */
export interface ReconnectOptions {
  /** First delay before a reconnect attempt, in ms (default 250); doubles per failed attempt. */
  minDelayMs?: number;
  /** Largest delay between attempts, in ms (default 10,000). Each delay is jittered (50–100 %). */
  maxDelayMs?: number;
  /** Attempts before giving up and emitting `closed` (default: no limit). */
  maxAttempts?: number;
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** A token from `user.login`: the session is resumed (`user.resume`) before `connect` resolves. */
  token?: string;
  /** Default per-request timeout in ms (default 10,000): the request rejects with `TIMEOUT`. */
  timeoutMs?: number;
  /** Milliseconds to wait for the WebSocket to open (default 10,000). */
  connectTimeoutMs?: number;
  /** A `sys.ping` every this many ms (default 20,000; the server closes a connection idle for 60 s);
   * 0 turns heartbeats off. A ping unanswered within `timeoutMs` counts the connection as lost. */
  pingIntervalMs?: number;
  /** Requests sent and not yet answered at most (default 32; the server queues up to 128 per
   * connection); more wait in the client, in order. */
  maxInFlight?: number;
  /** Reconnect after a lost connection (default on); `false` to emit `closed` instead. */
  reconnect?: boolean | ReconnectOptions;
  /** Times a request refused with `RATE_LIMITED` is sent again after a backoff (default 3); the
   * server did not run it, so this is safe for any request. */
  rateLimitRetries?: number;
  /** The WebSocket implementation (default: the global one, else the `ws` package in Node). */
  WebSocket?: WebSocketConstructor;
}

/** `disconnected` and `closed`: the WebSocket's close code and reason (1006 when none came). */
export interface CloseEvent {
  code: number;
  reason: string;
}

/** `kick`: the server's `sys.kick` before it closes the session. */
export interface KickEvent {
  /** The `ErrorCode`, e.g. `LOGGED_IN_ELSEWHERE` (12) or `SERVER_SHUTDOWN` (13). */
  code: number;
  /** Its name, e.g. `"LOGGED_IN_ELSEWHERE"`. */
  name: string;
}

/** `reconnected`: the connection is back, and the session resumed when the client had a token. */
export interface ReconnectedEvent {
  /** Whether `user.resume` succeeded (false when there was no token or the server refused it). */
  resumed: boolean;
  /** The player, when resumed. */
  userId?: string;
  name?: string;
  /** Why the resume failed, when it did. */
  error?: MortarError;
}

type PushJson<R extends string> = R extends keyof typeof pushes
  ? MessageJsonType<(typeof pushes)[R]>
  : R extends keyof typeof requests
    ? MessageJsonType<(typeof requests)[R]["reply"]>
    : JsonObject;
type RequestJson<R extends string> = R extends keyof typeof requests
  ? MessageJsonType<(typeof requests)[R]["request"]>
  : JsonObject;
type ReplyJson<R extends string> = R extends keyof typeof requests
  ? MessageJsonType<(typeof requests)[R]["reply"]>
  : JsonObject;

/** A route (`main.sub`) known at build time, or any other string. */
type Route = keyof typeof requests | (string & {});
type PushRoute = keyof typeof pushes | (string & {});

/** A connected client: the generic `request`/`on`/`close`, and a typed property per module
 * (`client.pack.use({ itemId: 1, count: 1 })`). */
export type Client = MortarClient & Modules;

/**
 * Opens a connection to a gateway (`ws://host:4000/ws`) and, with `options.token`, resumes that
 * session before resolving. Rejects when the connection cannot be opened, or with the
 * `MortarError` of a refused resume.
 */
export async function connect(url: string, options: ConnectOptions = {}): Promise<Client> {
  const WebSocketImpl = options.WebSocket ?? (await defaultWebSocket());
  const client = new MortarClient(url, options, WebSocketImpl);
  await client.open();
  return client as Client;
}

async function defaultWebSocket(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global) return global;
  const ws = await import("ws");
  return ws.WebSocket as unknown as WebSocketConstructor;
}

interface Pending {
  route: string;
  main: string;
  sub: string;
  data: Uint8Array;
  idempotent: boolean;
  resolve: (reply: UserMessage) => void;
  reject: (error: MortarError) => void;
  timer?: ReturnType<typeof setTimeout>;
  rateLimited: number;
  seq?: number;
}

type Listener = (message: UserMessage) => void;

const UNAVAILABLE = ErrorCode.UNAVAILABLE;

/** The connection behind a {@link Client}. Built by {@link connect}. */
export class MortarClient implements TypedCaller {
  private ws: WebSocket | null = null;
  /** Sent and not yet answered, by seq. */
  private readonly inFlight = new Map<number, Pending>();
  /** Not yet sent: over the in-flight window, or while (re)connecting. */
  private readonly waiting: Pending[] = [];
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly events = new Map<string, Set<(event: never) => void>>();
  private lastSeq = 0;
  /** Requests go out only when the connection is open and the session resumed. */
  private ready = false;
  private closedByUser = false;
  private kicked = false;
  /** A reconnect loop runs: a close while it resumes is its to handle. */
  private reconnecting = false;
  /** `closed` was emitted; nothing more goes out. */
  private finished = false;
  /** Who the last `user.resume` answered. */
  private resumedAs?: { userId: string; name: string };
  private pausedUntil = 0;
  private pumpTimer?: ReturnType<typeof setTimeout>;
  private pingTimer?: ReturnType<typeof setInterval>;
  private token?: string;
  private registry?: Promise<Registry | undefined>;
  private readonly timeoutMs: number;
  private readonly maxInFlight: number;
  private readonly reconnect: Required<ReconnectOptions> | null;

  constructor(
    private readonly url: string,
    private readonly options: ConnectOptions,
    private readonly WebSocketImpl: WebSocketConstructor,
  ) {
    this.token = options.token;
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? 32);
    this.reconnect =
      options.reconnect === false
        ? null
        : {
            minDelayMs: 250,
            maxDelayMs: 10_000,
            maxAttempts: Number.POSITIVE_INFINITY,
            ...(typeof options.reconnect === "object" ? options.reconnect : {}),
          };
    Object.assign(this, modules(this));
  }

  /** The session token the client resumes with after a reconnect: the `connect` option's, the
   * last `user.login` reply's, or {@link setToken}'s. */
  get sessionToken(): string | undefined {
    return this.token;
  }

  /** Sets the token to resume with after a reconnect (for a login route of your own). */
  setToken(token: string | undefined): void {
    this.token = token;
  }

  /** Whether the connection is open and requests go out now. */
  get connected(): boolean {
    return this.ready;
  }

  /**
   * Sends `body` (the route's request in proto3 JSON form: lowerCamelCase fields, 64-bit integers
   * as strings) and resolves with the reply's fields in the same form (fields at their defaults
   * included), or rejects with a {@link MortarError}. Routes not compiled into the client are
   * encoded with the gateway's descriptors (`sys.descriptors`).
   */
  async request<R extends Route>(route: R, body?: RequestJson<R>, options?: RequestOptions): Promise<ReplyJson<R>> {
    const types = await this.types(route);
    if (!types) {
      // Unknown to the client and the gateway: the server answers why (NO_ROUTE, with a suggestion).
      if (body && Object.keys(body).length > 0) {
        throw new MortarError(ErrorCode.NO_ROUTE, "no message types are known for this route", route);
      }
      await this.send(route, new Uint8Array(), options);
      return {} as ReplyJson<R>;
    }
    let message;
    try {
      message = fromJson(types.request, (body ?? {}) as JsonObject);
    } catch (error) {
      throw new MortarError(ErrorCode.BAD_REQUEST, `body is not a ${types.request.typeName}: ${(error as Error).message}`, route);
    }
    const reply = await this.send(route, toBinary(types.request, message), options);
    return toJson(types.reply, fromBinary(types.reply, reply.data), { alwaysEmitImplicit: true }) as ReplyJson<R>;
  }

  /** A typed request (what `client.<module>.<route>()` calls). */
  async call<Req extends DescMessage, Resp extends DescMessage>(
    route: string,
    request: Req,
    reply: Resp,
    body: MessageInitShape<Req>,
    options?: RequestOptions,
  ): Promise<MessageShape<Resp>> {
    const answer = await this.send(route, toBinary(request, create(request, body)), options);
    return fromBinary(reply, answer.data);
  }

  /** A typed push handler (what `client.<module>.on<Push>()` calls). Returns an unsubscribe. */
  onMessage<T extends DescMessage>(route: string, schema: T, handler: (push: MessageShape<T>) => void): () => void {
    return this.listen(route, (message) => {
      let push: MessageShape<T>;
      try {
        push = fromBinary(schema, message.data);
      } catch {
        return; // not the route's message: nothing a handler could use
      }
      handler(push);
    });
  }

  /** `reconnected`: back after a lost connection (resumed when there was a token). */
  on(event: "reconnected", handler: (event: ReconnectedEvent) => void): () => void;
  /** `disconnected`: the connection was lost; the client reconnects unless told not to. */
  on(event: "disconnected", handler: (event: CloseEvent) => void): () => void;
  /** `kick`: the server's `sys.kick` (the close follows). After any kick but `SERVER_SHUTDOWN`
   * the client does not reconnect by itself. */
  on(event: "kick", handler: (event: KickEvent) => void): () => void;
  /** `closed`: the client is done (closed, kicked, or out of reconnect attempts). */
  on(event: "closed", handler: (event: CloseEvent) => void): () => void;
  /** A push route (`main.sub`): the handler gets the push's fields in proto3 JSON form. */
  on<R extends PushRoute>(route: R, handler: (push: PushJson<R>) => void): () => void;
  on(name: string, handler: (value: never) => void): () => void {
    if (!name.includes(".")) {
      const set = this.events.get(name) ?? new Set();
      this.events.set(name, set);
      set.add(handler);
      return () => set.delete(handler);
    }
    return this.listen(name, (message) => {
      void this.pushSchema(name).then((schema) => {
        let json: JsonObject = {};
        try {
          if (schema) json = toJson(schema, fromBinary(schema, message.data), { alwaysEmitImplicit: true }) as JsonObject;
        } catch {
          return; // not the route's message: nothing a handler could use
        }
        (handler as (push: unknown) => void)(json);
      });
    });
  }

  /** Closes the connection (code 1000); requests not yet answered reject with `UNAVAILABLE`. */
  close(): Promise<void> {
    this.closedByUser = true;
    const ws = this.ws;
    if (!ws || ws.readyState === ws.CLOSED) {
      this.finish({ code: 1000, reason: "closed by the client" });
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      ws.addEventListener("close", () => resolve());
      ws.close(1000, "bye");
    });
  }

  // --- connection ---------------------------------------------------------------------------

  /** The first connection (what {@link connect} calls): rejects instead of retrying. */
  async open(): Promise<void> {
    await this.openSocket();
    if (this.token) {
      try {
        await this.resume();
      } catch (error) {
        await this.close();
        throw error;
      }
    }
    this.startPings();
    this.ready = true;
    this.pump();
  }

  private openSocket(): Promise<void> {
    return new Promise((resolve, reject) => {
      let ws: WebSocket;
      try {
        ws = new this.WebSocketImpl(this.url);
      } catch (error) {
        reject(error);
        return;
      }
      ws.binaryType = "arraybuffer";
      let opened = false;
      const timer = setTimeout(() => {
        ws.close();
        reject(new Error(`mortar: ${this.url} did not open within ${this.options.connectTimeoutMs ?? 10_000} ms`));
      }, this.options.connectTimeoutMs ?? 10_000);
      ws.addEventListener("open", () => {
        opened = true;
        clearTimeout(timer);
        this.ws = ws;
        resolve();
      });
      ws.addEventListener("message", (event) => this.onFrame(event.data as ArrayBuffer));
      ws.addEventListener("close", (event) => {
        clearTimeout(timer);
        if (!opened) {
          reject(new Error(`mortar: could not connect to ${this.url} (close code ${event.code})`));
          return;
        }
        this.onClose({ code: event.code, reason: event.reason });
      });
      // Errors are followed by a close event, which does the work.
      ws.addEventListener("error", () => {});
    });
  }

  private async resume(): Promise<void> {
    const token = this.token as string;
    const reply = await this.sendNow("user.resume", toBinary(ResumeReqSchema, create(ResumeReqSchema, { token })));
    const resumed = fromBinary(ResumeRespSchema, reply.data);
    this.resumedAs = { userId: resumed.userId.toString(), name: resumed.name };
  }

  private onClose(event: CloseEvent): void {
    this.ws = null;
    this.ready = false;
    this.stopPings();
    for (const pending of [...this.inFlight.values()].reverse()) {
      if (pending.idempotent && !this.closedByUser) {
        this.waiting.unshift(pending);
      } else {
        this.fail(pending, UNAVAILABLE, "the connection was lost before the reply");
      }
    }
    this.inFlight.clear();
    if (this.reconnecting) return; // the reconnect loop tries again
    if (!this.closedByUser) this.emit("disconnected", event);
    if (this.closedByUser || this.kicked || !this.reconnect) {
      this.finish(event);
      return;
    }
    void this.reconnectLoop(event);
  }

  private async reconnectLoop(lastClose: CloseEvent): Promise<void> {
    const policy = this.reconnect as Required<ReconnectOptions>;
    this.reconnecting = true;
    try {
      await this.reconnectAttempts(policy, lastClose);
    } finally {
      this.reconnecting = false;
    }
  }

  private async reconnectAttempts(policy: Required<ReconnectOptions>, lastClose: CloseEvent): Promise<void> {
    for (let attempt = 0; attempt < policy.maxAttempts; attempt++) {
      const ceiling = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** Math.min(attempt, 20));
      await sleep(ceiling * (0.5 + Math.random() * 0.5));
      if (this.closedByUser) return this.finish(lastClose);
      try {
        await this.openSocket();
      } catch {
        continue;
      }
      if (this.closedByUser) {
        this.ws?.close(1000, "bye");
        return this.finish(lastClose);
      }
      let event: ReconnectedEvent = { resumed: false };
      if (this.token) {
        try {
          await this.resume();
          event = { resumed: true, ...this.resumedAs };
        } catch (error) {
          const failure = error as MortarError;
          if (failure.code === UNAVAILABLE || failure.code === ErrorCode.TIMEOUT) {
            // No worker yet (a node restarting): try again on a new connection.
            this.ws?.close(1000, "retrying");
            continue;
          }
          // The token is no longer valid (revoked by a newer login, or unknown): log in again.
          this.token = undefined;
          event = { resumed: false, error: failure };
        }
      }
      if (!this.ws) continue; // lost again while resuming
      this.startPings();
      this.ready = true;
      this.emit("reconnected", event);
      this.pump();
      return;
    }
    this.finish(lastClose);
  }

  /** The client is done: everything not answered rejects. */
  private finish(event: CloseEvent): void {
    if (this.finished) return;
    this.finished = true;
    this.ready = false;
    this.stopPings();
    for (const pending of this.waiting.splice(0)) this.fail(pending, UNAVAILABLE, "the client is closed");
    for (const pending of this.inFlight.values()) this.fail(pending, UNAVAILABLE, "the client is closed");
    this.inFlight.clear();
    this.emit("closed", event);
  }

  private startPings(): void {
    const every = this.options.pingIntervalMs ?? 20_000;
    if (every <= 0) return;
    this.stopPings();
    this.pingTimer = setInterval(() => {
      const ws = this.ws;
      this.sendNow("sys.ping", toBinary(PingSchema, create(PingSchema))).catch((error: MortarError) => {
        // No pong in time: the connection is dead even if the socket does not know it yet.
        if (error.code === ErrorCode.TIMEOUT && ws === this.ws) ws?.close(4000, "no pong");
      });
    }, every);
  }

  private stopPings(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = undefined;
  }

  // --- requests -----------------------------------------------------------------------------

  /** Queues a request behind the others; resolves with an `OK` reply, rejects otherwise. */
  private send(route: string, data: Uint8Array, options?: RequestOptions): Promise<UserMessage> {
    if (this.finished) return Promise.reject(new MortarError(UNAVAILABLE, "the client is closed", route));
    return new Promise((resolve, reject) => {
      const pending = this.pending(route, data, options, resolve, reject);
      this.waiting.push(pending);
      this.pump();
    });
  }

  /** Sends at once, ahead of queued requests and the window (pings, the resume). */
  private sendNow(route: string, data: Uint8Array, timeoutMs?: number): Promise<UserMessage> {
    return new Promise((resolve, reject) => {
      const pending = this.pending(route, data, { timeoutMs }, resolve, reject);
      if (!this.ws) {
        this.fail(pending, UNAVAILABLE, "not connected");
        return;
      }
      this.transmit(pending);
    });
  }

  private pending(
    route: string,
    data: Uint8Array,
    options: RequestOptions | undefined,
    resolve: (reply: UserMessage) => void,
    reject: (error: MortarError) => void,
  ): Pending {
    const dot = route.indexOf(".");
    const pending: Pending = {
      route,
      main: dot < 0 ? route : route.slice(0, dot),
      sub: dot < 0 ? "" : route.slice(dot + 1),
      data,
      idempotent: options?.idempotent ?? false,
      resolve,
      reject,
      rateLimited: 0,
    };
    const timeoutMs = options?.timeoutMs ?? this.timeoutMs;
    pending.timer = setTimeout(() => {
      const at = this.waiting.indexOf(pending);
      if (at >= 0) this.waiting.splice(at, 1);
      if (pending.seq !== undefined) this.inFlight.delete(pending.seq);
      // A late reply finds no seq and is dropped.
      this.fail(pending, ErrorCode.TIMEOUT, `no reply within ${timeoutMs} ms`);
      this.pump();
    }, timeoutMs);
    return pending;
  }

  private fail(pending: Pending, code: number, reason: string): void {
    clearTimeout(pending.timer);
    pending.reject(new MortarError(code, reason, pending.route));
  }

  /** Sends waiting requests while the window has room. */
  private pump(): void {
    if (!this.ready || !this.ws) return;
    const wait = this.pausedUntil - Date.now();
    if (wait > 0) {
      this.pumpTimer ??= setTimeout(() => {
        this.pumpTimer = undefined;
        this.pump();
      }, wait);
      return;
    }
    while (this.waiting.length > 0 && this.inFlight.size < this.maxInFlight) {
      this.transmit(this.waiting.shift() as Pending);
    }
  }

  private transmit(pending: Pending): void {
    do {
      this.lastSeq = this.lastSeq >= 0xffffffff ? 1 : this.lastSeq + 1;
    } while (this.inFlight.has(this.lastSeq));
    pending.seq = this.lastSeq;
    this.inFlight.set(pending.seq, pending);
    const frame = create(UserMessageSchema, {
      mainType: pending.main,
      subType: pending.sub,
      seq: pending.seq,
      data: pending.data,
    });
    (this.ws as WebSocket).send(toBinary(UserMessageSchema, frame));
  }

  private onFrame(data: ArrayBuffer): void {
    let message: UserMessage;
    try {
      message = fromBinary(UserMessageSchema, new Uint8Array(data));
    } catch {
      return; // not an envelope: nothing to match it to
    }
    if (message.seq === 0) {
      this.onPush(message);
      return;
    }
    const pending = this.inFlight.get(message.seq);
    if (!pending) return; // timed out already
    this.inFlight.delete(message.seq);
    if (message.code === ErrorCode.RATE_LIMITED && pending.rateLimited < (this.options.rateLimitRetries ?? 3)) {
      // Refused before it ran: back off and send it again, first in line.
      pending.rateLimited += 1;
      pending.seq = undefined;
      this.pausedUntil = Math.max(this.pausedUntil, Date.now() + 100 * 2 ** pending.rateLimited * (0.5 + Math.random()));
      this.waiting.unshift(pending);
      this.pump();
      return;
    }
    clearTimeout(pending.timer);
    if (message.code === ErrorCode.OK) {
      this.noteToken(pending.route, message);
      pending.resolve(message);
    } else {
      pending.reject(new MortarError(message.code, message.reason, pending.route));
    }
    this.pump();
  }

  /** Keeps the token of a login, to resume with after a reconnect. */
  private noteToken(route: string, reply: UserMessage): void {
    if (route === "user.login") {
      try {
        this.token = fromBinary(LoginRespSchema, reply.data).token || this.token;
      } catch {
        // A login route of another shape: the caller sets the token.
      }
    }
  }

  private onPush(message: UserMessage): void {
    const route = `${message.mainType}.${message.subType}`;
    if (route === "sys.kick") {
      const kick = fromBinary(KickSchema, message.data);
      if (kick.reason !== ErrorCode.SERVER_SHUTDOWN) this.kicked = true;
      this.emit("kick", { code: kick.reason, name: codeName(kick.reason) });
      return;
    }
    for (const listener of this.listeners.get(route) ?? []) {
      try {
        listener(message);
      } catch (error) {
        setTimeout(() => {
          throw error;
        });
      }
    }
  }

  private listen(route: string, listener: Listener): () => void {
    const set = this.listeners.get(route) ?? new Set();
    this.listeners.set(route, set);
    set.add(listener);
    return () => set.delete(listener);
  }

  private emit(name: string, event: unknown): void {
    for (const handler of this.events.get(name) ?? []) (handler as (event: unknown) => void)(event);
  }

  // --- message types ------------------------------------------------------------------------

  private async types(route: string): Promise<{ request: DescMessage; reply: DescMessage } | undefined> {
    const known = (requests as Record<string, { request: DescMessage; reply: DescMessage }>)[route];
    if (known) return known;
    if (route === "sys.ping") return { request: PingSchema, reply: PongSchema };
    if (route === "sys.descriptors") return { request: EmptySchema, reply: DescriptorsSchema };
    const registry = await this.descriptors();
    const main = route.slice(0, route.indexOf("."));
    const sub = route.slice(route.indexOf(".") + 1);
    for (const type of registry ?? []) {
      if (type.kind !== "service" || type.name.toLowerCase() !== main) continue;
      const method = type.methods.find((m) => snake(m.name) === sub);
      if (method) return { request: method.input, reply: method.output };
    }
    return undefined;
  }

  private async pushSchema(route: string): Promise<DescMessage | undefined> {
    const known = (pushes as Record<string, DescMessage>)[route];
    if (known) return known;
    return (await this.types(route))?.reply;
  }

  /** The gateway's descriptors, fetched once, for routes the client was not generated with. */
  private descriptors(): Promise<Registry | undefined> {
    this.registry ??= this.send("sys.descriptors", new Uint8Array())
      .then((reply) => {
        const set = fromBinary(DescriptorsSchema, reply.data).fileDescriptorSet;
        return createFileRegistry(fromBinary(FileDescriptorSetSchema, set));
      })
      .catch(() => {
        this.registry = undefined; // ask again next time
        return undefined;
      });
    return this.registry;
  }
}

function snake(name: string): string {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
