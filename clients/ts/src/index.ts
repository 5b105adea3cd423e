/**
 * The mortar client for browsers and Node ≥ 18: `connect(url, options)` gives a {@link Client}
 * with the generic `request(route, body)` / `on(route, handler)` / `close()` and one typed
 * property per module, generated from the protos (`client.pack.use({ itemId: 1, count: 1 })`).
 * See README.md.
 */
export {
  type Client,
  type CloseEvent,
  type ConnectOptions,
  connect,
  type KickEvent,
  MortarClient,
  type ReconnectedEvent,
  type ReconnectOptions,
  type WebSocketConstructor,
} from "./client.js";
export { codeName, ErrorCode, MortarError } from "./error.js";
export { type Modules, moduleCodes, pushes, type RequestOptions, requests } from "./gen/routes.js";
