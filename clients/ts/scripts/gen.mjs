#!/usr/bin/env node
// Regenerates src/gen/ of this package: the protobuf-es message code of every proto folder
// (Google's `protoc` with `protoc-gen-es`), and routes.ts, the typed route table of the routes
// clients may call.
//
//   node scripts/gen.mjs [--check] [--repo DIR] [--proto DIR]... [--mortar "COMMAND"]
//
// Proto folders: pb/proto and modules/*/proto of the mortar checkout (--repo, default the one this
// package sits in), and each --proto DIR (a game's own modules). Which routes clients may call
// comes from the server binary (`mortar routes`, which knows the internal ones): `$MORTAR_BIN
// routes` when MORTAR_BIN is set, else `cargo run --release -q -p mortar-cli -- routes` in the
// checkout; --mortar names another command, e.g. a game's own binary linking its modules
// (`--mortar "../game-server/target/release/game-server routes"`, the whole command, run where
// gen is run). --check regenerates into a scratch folder and fails when src/gen differs (CI).

import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { execFileSync, execSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const pkg = resolve(here, "..");

const args = process.argv.slice(2);
let check = false;
let repo = resolve(pkg, "../..");
const extraProtos = [];
let mortar = process.env.MORTAR_BIN ? `"${process.env.MORTAR_BIN}" routes` : undefined;
for (let i = 0; i < args.length; i++) {
  const arg = args[i];
  if (arg === "--check") check = true;
  else if (arg === "--repo" && args[i + 1]) repo = resolve(args[++i]);
  else if (arg === "--proto" && args[i + 1]) extraProtos.push(resolve(args[++i]));
  else if (arg === "--mortar" && args[i + 1]) mortar = args[++i];
  else {
    console.error(`gen: unknown argument ${arg}\nusage: node scripts/gen.mjs [--check] [--repo DIR] [--proto DIR]... [--mortar "COMMAND"]`);
    process.exit(2);
  }
}
if (!existsSync(join(repo, "pb/proto/mortar.proto"))) {
  console.error(`gen: ${repo} is not a mortar checkout (no pb/proto/mortar.proto); pass --repo DIR`);
  process.exit(2);
}
// The default runs in the checkout (cargo finds the workspace there); a command given runs where
// gen runs, so its relative paths mean what they say.
const mortarCwd = mortar ? process.cwd() : repo;
mortar ??= "cargo run --release -q -p mortar-cli -- routes";

const folders = [join(repo, "pb/proto")];
for (const module of readdirSync(join(repo, "modules")).sort()) {
  const folder = join(repo, "modules", module, "proto");
  if (existsSync(folder)) folders.push(folder);
}
folders.push(...extraProtos);

const out = mkdtempSync(join(tmpdir(), "mortar-gen-"));
try {
  // 1. Messages and services, one *_pb.ts per .proto.
  const files = [];
  for (const folder of folders) {
    for (const file of readdirSync(folder).filter((f) => f.endsWith(".proto")).sort()) files.push(join(folder, file));
  }
  const plugin = join(pkg, "node_modules/.bin/protoc-gen-es");
  execFileSync(
    "protoc",
    [
      `--plugin=protoc-gen-es=${plugin}`,
      `--es_out=${out}`,
      "--es_opt=target=ts,import_extension=js,json_types=true",
      ...folders.map((f) => `-I${f}`),
      ...files,
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );

  // 2. The services and messages of those protos, read back from protoc as a descriptor set.
  const { services, messages, codes } = readDescriptors(folders, files);

  // 3. Which routes clients may call.
  const routes = JSON.parse(execSync(mortar, { cwd: mortarCwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] })).routes;
  const served = new Set(routes.map((r) => r.route.slice(0, r.route.indexOf("."))));
  for (const service of services) {
    const module = service.name.toLowerCase();
    if (module !== "sys" && !served.has(module) && service.methods.some((m) => !m.push)) {
      console.warn(`gen: \`${mortar}\` serves no route of module ${module}: only its pushes are generated (pass --mortar with a binary that links it)`);
    }
  }
  writeFileSync(join(out, "routes.ts"), routesTs(services, messages, codes, routes));

  if (check) {
    const stale = diff(out, join(pkg, "src/gen"));
    if (stale.length) {
      console.error(`gen: src/gen is stale (${stale.join(", ")}); run \`npm run gen\` in clients/ts and commit it`);
      process.exitCode = 1;
    } else {
      console.log("gen: src/gen is up to date");
    }
  } else {
    rmSync(join(pkg, "src/gen"), { recursive: true, force: true });
    cpSync(out, join(pkg, "src/gen"), { recursive: true });
    console.log(`gen: wrote src/gen (${files.length} protos, ${services.length} services)`);
  }
} finally {
  rmSync(out, { recursive: true, force: true });
}

/** Services and messages of the protos, from `protoc --descriptor_set_out` read with protobuf-es. */
function readDescriptors(folders, files) {
  const set = join(out, "set.binpb");
  execFileSync("protoc", [`--descriptor_set_out=${set}`, ...folders.map((f) => `-I${f}`), ...files]);
  const bytes = readFileSync(set);
  rmSync(set);
  const services = [];
  const messages = new Map(); // full name → { file, package }
  const codes = new Map(); // module → [[number, name]] of its proto's `enum ModuleCode`
  for (const file of fromBinary(FileDescriptorSetSchema, bytes).file) {
    const where = { file: file.name.replace(/\.proto$/, ""), package: file.package };
    const walk = (prefix, list) => {
      for (const message of list) {
        messages.set(`${prefix}${message.name}`, where);
        walk(`${prefix}${message.name}.`, message.nestedType);
      }
    };
    walk(file.package ? `${file.package}.` : "", file.messageType);
    const moduleCode = file.enumType.find((e) => e.name === "ModuleCode");
    for (const service of file.service) {
      if (moduleCode) {
        codes.set(
          service.name.toLowerCase(),
          moduleCode.value.filter((v) => v.number >= 1000).map((v) => [v.number, v.name]),
        );
      }
      services.push({
        name: service.name,
        methods: service.method.map((m) => ({
          name: m.name,
          input: m.inputType.replace(/^\./, ""),
          output: m.outputType.replace(/^\./, ""),
          push: Boolean(m.serverStreaming),
        })),
      });
    }
  }
  return { services, messages, codes };
}

/** `AddItems` → `add_items`: a route's `sub` from its method's name. */
function snake(name) {
  return name.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toLowerCase();
}

/** `AddItems` → `addItems`: the typed method's name (protobuf-es's own method naming). */
function camel(name) {
  return name[0].toLowerCase() + name.slice(1);
}

/** `pack.UseReq` → `pack.UseReqSchema` as imported into routes.ts. */
function schema(imports, typeName, byType) {
  const where = byType.get(typeName);
  if (!where) throw new Error(`gen: no message ${typeName} in the protos`);
  imports.add(where.file);
  return `${ident(where.file)}.${typeName.slice(where.package ? where.package.length + 1 : 0).replace(/\./g, "_")}Schema`;
}

function ident(file) {
  return `$${file.replace(/[^A-Za-z0-9_]/g, "_")}`;
}

function routesTs(services, byType, codes, routes) {
  const clientRoutes = new Map(routes.filter((r) => r.access !== "internal").map((r) => [r.route, r]));

  const imports = new Set();
  const requestRows = [];
  const pushRows = [];
  const classes = [];
  const members = [];
  for (const service of services) {
    const module = service.name.toLowerCase();
    const methods = [];
    for (const m of service.methods) {
      const route = `${module}.${snake(m.name)}`;
      if (m.push) {
        const type = schema(imports, m.output, byType);
        pushRows.push(`  ${JSON.stringify(route)}: ${type},`);
        methods.push(
          `  /** Push \`${route}\`: calls \`handler\` with each one; returns a function that stops it. */\n` +
            `  on${m.name}(handler: (push: MessageShape<typeof ${type}>) => void): () => void {\n` +
            `    return this.client.onMessage(${JSON.stringify(route)}, ${type}, handler);\n  }`,
        );
        continue;
      }
      const access = clientRoutes.get(route);
      if (!access) continue; // internal, or not served by this binary
      const req = schema(imports, m.input, byType);
      const resp = schema(imports, m.output, byType);
      requestRows.push(`  ${JSON.stringify(route)}: { request: ${req}, reply: ${resp} },`);
      methods.push(
        `  /** \`${route}\`${access.access === "public" ? " (public: no login needed)" : ""}. */\n` +
          `  ${camel(m.name)}(request: MessageInitShape<typeof ${req}> = {}, options?: RequestOptions): Promise<MessageShape<typeof ${resp}>> {\n` +
          `    return this.client.call(${JSON.stringify(route)}, ${req}, ${resp}, request, options);\n  }`,
      );
    }
    if (!methods.length || module === "sys") continue;
    const cls = `${service.name}Routes`;
    classes.push(`/** The \`${module}\` module's client routes and pushes. */\nexport class ${cls} {\n  constructor(private readonly client: TypedCaller) {}\n\n${methods.join("\n\n")}\n}`);
    members.push({ module, cls });
  }

  return `// Generated by scripts/gen.mjs from the protos and \`mortar routes\`; do not edit.
/* eslint-disable */
import type { DescMessage, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
${[...imports].sort().map((f) => `import * as ${ident(f)} from "./${f}_pb.js";`).join("\n")}

/** Options of one request. */
export interface RequestOptions {
  /** Milliseconds to wait for the reply (default: the client's \`timeoutMs\`). */
  timeoutMs?: number;
  /** Safe to send again after a lost connection when its reply was not seen (default false). */
  idempotent?: boolean;
}

/** What the typed route classes call: the client's typed request and push primitives. */
export interface TypedCaller {
  call<Req extends DescMessage, Resp extends DescMessage>(
    route: string,
    request: Req,
    reply: Resp,
    body: MessageInitShape<Req>,
    options?: RequestOptions,
  ): Promise<MessageShape<Resp>>;
  onMessage<T extends DescMessage>(route: string, schema: T, handler: (push: MessageShape<T>) => void): () => void;
}

/** Every route a client may call: its request and reply message schemas. */
export const requests = {
${requestRows.join("\n")}
} as const;

/** Every push route (server-streaming methods) and its message schema. A unary route may also be
 * pushed (its reply type is then the push's, e.g. \`friend.request\`). */
export const pushes = {
${pushRows.join("\n")}
} as const;

${classes.join("\n\n")}

/** Each module's own codes (1000 and up), from the \`enum ModuleCode\` of its proto. */
export const moduleCodes: Readonly<Record<string, Readonly<Record<number, string>>>> = {
${[...codes].sort(([a], [b]) => a.localeCompare(b)).map(([module, values]) => `  ${module}: { ${values.map(([n, name]) => `${n}: ${JSON.stringify(name)}`).join(", ")} },`).join("\n")}
};

/** The typed route classes, one per module, as properties of a client. */
export interface Modules {
${members.map((m) => `  readonly ${m.module}: ${m.cls};`).join("\n")}
}

/** Builds the typed route classes over \`client\`. */
export function modules(client: TypedCaller): Modules {
  return {
${members.map((m) => `    ${m.module}: new ${m.cls}(client),`).join("\n")}
  };
}
`;
}

/** Files that differ between two folders (added, removed or changed), by name. */
function diff(fresh, committed) {
  const list = (dir) => (existsSync(dir) ? readdirSync(dir).sort() : []);
  const names = new Set([...list(fresh), ...list(committed)]);
  return [...names].filter((name) => {
    const a = join(fresh, name);
    const b = join(committed, name);
    return !existsSync(a) || !existsSync(b) || !readFileSync(a).equals(readFileSync(b));
  });
}
