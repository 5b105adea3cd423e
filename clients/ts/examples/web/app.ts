// The demo: log in, the pack, friends with online dots from pushes, group chat. Built by
// serve.mjs with esbuild; the gateway is `?gateway=ws://…` (default: `mortar dev`'s).
import { type Client, connect, MortarError } from "../../src/index.js";

const gateway = new URLSearchParams(location.search).get("gateway") ?? "ws://127.0.0.1:4000/ws";
const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const value = (id: string) => $<HTMLInputElement>(id).value.trim();
const ITEM_NAMES: Record<number, string> = { 1: "Gold", 2: "Gem", 100: "Small Potion", 101: "Large Potion", 200: "Iron Ore", 300: "Wooden Sword" };

let client: Client;
let groupId: bigint | undefined;
let kickedBy: string | undefined;

function show(id: string, error: unknown) {
  $(id).textContent = error instanceof MortarError ? `${error.name}: ${error.reason || "no reason given"}` : String(error);
}

async function start() {
  client = await connect(gateway);
  $("status").textContent = "connected";
  client.on("disconnected", () => ($("status").textContent = "reconnecting…"));
  client.on("reconnected", (event) => {
    $("status").textContent = event.resumed ? "connected (session resumed)" : "connected (log in again)";
    if (event.resumed) void refresh();
  });
  client.on("kick", (kick) => {
    kickedBy = kick.name;
    $("status").textContent = `kicked: ${kick.name}`;
  });
  client.on("closed", () => {
    // After a kick (another login of this account, say) or a lost connection for good.
    $("status").textContent = kickedBy ? `kicked: ${kickedBy} (reload to play here)` : "disconnected (reload to try again)";
    document.body.classList.add("gone");
  });
  client.pack.onChanged(() => void loadPack());
  client.on("friend.request", () => void loadFriends());
  client.friend.onAccepted(() => void loadFriends());
  client.friend.onOnline((p) => setDot(p.userId, true));
  client.friend.onOffline((p) => setDot(p.userId, false));
  client.group.onMessage((said) => {
    if (said.groupId !== groupId) return;
    const line = document.createElement("div");
    line.innerHTML = "<b></b>: <span></span>";
    (line.firstChild as HTMLElement).textContent = said.name;
    (line.lastChild as HTMLElement).textContent = said.text;
    $("messages").append(line);
    $("messages").scrollTop = $("messages").scrollHeight;
  });
}

async function enter() {
  $("login-error").textContent = "";
  const account = value("account");
  const password = value("password");
  try {
    let registered = true;
    try {
      await client.user.register({ account, password });
    } catch (error) {
      if (!(error instanceof MortarError && error.name === "ALREADY_EXISTS")) throw error;
      registered = false;
    }
    const login = await client.user.login({ account, password });
    let name = login.name;
    if (registered) {
      // New players are `Player` and 8 digits: take the account's name when nobody has it.
      name = await client.user.rename({ name: account }).then((renamed) => renamed.name, () => name);
    }
    $("who").textContent = name;
    $("my-id").textContent = login.userId.toString();
    $("login").hidden = true;
    $("game").hidden = false;
    await refresh();
  } catch (error) {
    show("login-error", error);
  }
}

async function refresh() {
  await Promise.all([loadPack(), loadFriends(), loadGroup()]);
}

async function loadPack() {
  const pack = await client.pack.query();
  const list = $("items");
  list.replaceChildren();
  for (const item of pack.items) {
    const li = document.createElement("li");
    li.textContent = `${ITEM_NAMES[item.itemId] ?? `item ${item.itemId}`} × ${item.count}`;
    if (item.itemId === 100 || item.itemId === 101) {
      const use = document.createElement("button");
      use.textContent = "Use";
      use.onclick = () =>
        client.pack.use({ itemId: item.itemId, count: 1 }).then(loadPack, (error) => show("pack-error", error));
      li.append(use);
    }
    list.append(li);
  }
}

async function loadFriends() {
  const { friends } = await client.friend.list();
  const list = $("friends");
  list.replaceChildren();
  for (const friend of friends) {
    const li = document.createElement("li");
    li.dataset.userId = friend.userId.toString();
    const dot = document.createElement("span");
    // Online dots for friends only (state 1); a pending request has none.
    dot.className = friend.state === 1 ? (friend.online ? "dot on" : "dot") : "dot none";
    const name = document.createElement("span");
    name.textContent = friend.name;
    li.append(dot, name);
    if (friend.state === 3) {
      const accept = document.createElement("button");
      accept.textContent = "Accept";
      accept.onclick = () =>
        client.friend.accept({ userId: friend.userId }).then(loadFriends, (error) => show("friend-error", error));
      li.append(accept);
    } else if (friend.state === 2) {
      li.append(Object.assign(document.createElement("span"), { className: "muted", textContent: "asked" }));
    }
    list.append(li);
  }
}

function setDot(userId: bigint, online: boolean) {
  const dot = document.querySelector(`#friends li[data-user-id="${userId}"] .dot`);
  dot?.classList.toggle("on", online);
}

async function loadGroup() {
  const { groups } = await client.group.mine();
  if (groups.length > 0) useGroup(groups[0].groupId, groups[0].name);
}

function useGroup(id: bigint, name: string) {
  groupId = id;
  $("group-label").textContent = `${name} · id ${id}`;
}

async function say() {
  $("chat-error").textContent = "";
  try {
    if (groupId === undefined) {
      const created = await client.group.create({ name: "lobby" });
      useGroup(created.groupId, "lobby");
    }
    await client.group.say({ groupId, text: value("text") });
    $<HTMLInputElement>("text").value = "";
  } catch (error) {
    show("chat-error", error);
  }
}

$("enter").onclick = () => void enter();
$("password").onkeydown = (event) => event.key === "Enter" && void enter();
$("text").onkeydown = (event) => event.key === "Enter" && void say();
$("say").onclick = () => void say();
/** The number typed in `id`, or an error shown in `errorId`. */
function idIn(id: string, errorId: string): bigint | undefined {
  const text = value(id).replace(/^#/, "");
  if (/^\d{1,20}$/.test(text)) return BigInt(text);
  $(errorId).textContent = "type a number";
  return undefined;
}

$("add-friend").onclick = () => {
  const userId = idIn("friend-id", "friend-error");
  if (userId === undefined) return;
  client.friend.request({ userId }).then(
    () => {
      $<HTMLInputElement>("friend-id").value = "";
      return loadFriends();
    },
    (error) => show("friend-error", error),
  );
};
$("create").onclick = () =>
  client.group.create({ name: "lobby" }).then((created) => useGroup(created.groupId, "lobby"), (error) => show("chat-error", error));
$("join").onclick = () => {
  const id = idIn("group-id", "chat-error");
  if (id === undefined) return;
  client.group
    .join({ groupId: id })
    .then(() => client.group.mine())
    .then(({ groups }) => useGroup(id, groups.find((group) => group.groupId === id)?.name ?? "group"))
    .catch((error) => show("chat-error", error));
};

start().catch((error) => ($("status").textContent = `cannot connect to ${gateway}: ${error}`));
