import { ErrorCode } from "./gen/mortar_pb.js";
import { moduleCodes } from "./gen/routes.js";

/**
 * A request that did not succeed: the reply's `code` (an `ErrorCode` number, or a module's own
 * code from 1000 up), its name (`"NOT_FOUND"`; a module's code by its proto's `enum ModuleCode`,
 * e.g. pack's `"NOT_ENOUGH_ITEMS"`, or `"CODE_1001"` when it declares none) and the
 * reply's `reason` (a few words for people and logs; branch on `code`, never on `reason`).
 *
 * The client raises two codes itself, with a reason that says so: `TIMEOUT` when no reply came
 * within the request's timeout, and `UNAVAILABLE` when the connection was lost before the reply
 * (or the client was closed).
 */
export class MortarError extends Error {
  /** The numeric code (`ErrorCode`, or a module's code ≥ 1000). */
  readonly code: number;
  /** The code's name, e.g. `NOT_FOUND` or `NOT_ENOUGH_ITEMS`; `CODE_<n>` for a module code its
   * proto does not name. */
  override readonly name: string;
  /** Why, from the server's reply (empty when it gave none) or from the client. */
  readonly reason: string;
  /** The route of the request. */
  readonly route: string;

  constructor(code: number, reason: string, route: string) {
    const name = codeName(code, route);
    super(`${route}: ${name}${reason ? `: ${reason}` : ""}`);
    this.code = code;
    this.name = name;
    this.reason = reason;
    this.route = route;
  }
}

/** `5` → `"TIMEOUT"`; a module's code (≥ 1000) by the `enum ModuleCode` of the route's module
 * (`codeName(1001, "pack.use")` → `"NOT_ENOUGH_ITEMS"`), else `"CODE_1001"`. */
export function codeName(code: number, route = ""): string {
  if (code < 1000) return (ErrorCode as unknown as Record<number, string | undefined>)[code] ?? `CODE_${code}`;
  return moduleCodes[route.slice(0, route.indexOf("."))]?.[code] ?? `CODE_${code}`;
}

export { ErrorCode };
