// The demo: log in, the pack, friends with online dots from pushes, group chat, and a duel in the
// arena (matchmake, then moves on a grid at the room's 10 Hz). Built by
// serve.mjs with esbuild; the gateway is `?gateway=ws://…` (default: `mortar dev`'s).
import { type Client, connect, MortarError } from "../../src/index.js";

const gateway = new URLSearchParams(location.search).get("gateway") ?? "ws://127.0.0.1:4000/ws";
const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const value = (id: string) => $<HTMLInputElement>(id).value.trim();
const ITEM_NAMES: Record<number, string> = { 1: "Gold", 2: "Gem", 100: "Small Potion", 101: "Large Potion", 200: "Iron Ore", 300: "Wooden Sword" };

let client: Client;
let groupId: bigint | undefined;
let kickedBy: string | undefined;
let myId: bigint | undefined;
/** The arena: the ticket while queued, the room while playing. */
let ticketId: string | undefined;
let roomId: string | undefined;

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
  client.matchmake.onMatched((matched) => void play(matched.roomId));
  client.arena.onState((state) => state.roomId === roomId && drawBoard(state.players));
  client.arena.onEnded((ended) => {
    if (ended.roomId !== roomId) return;
    roomId = undefined;
    const verdict =
      ended.reason === "won" ? (ended.winner === myId ? "You won!" : "You lost.") : `The room ended: ${ended.reason}.`;
    arenaState(verdict, false);
  });
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
    myId = login.userId;
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

/** Shows `text` as the arena's status; `playing` shows the move pad. */
function arenaState(text: string, playing: boolean) {
  $("arena-status").textContent = text;
  $("pad").hidden = !playing;
  $("find-duel").hidden = playing || ticketId !== undefined;
  $("cancel-duel").hidden = ticketId === undefined;
  $("room-label").textContent = roomId ?? "";
}

async function findDuel() {
  $("arena-error").textContent = "";
  try {
    ticketId = (await client.matchmake.join({ mode: "duel" })).ticketId;
    arenaState("waiting for an opponent…", false);
  } catch (error) {
    show("arena-error", error);
  }
}

async function cancelDuel() {
  const ticket = ticketId;
  ticketId = undefined;
  arenaState("not playing", false);
  if (ticket) await client.matchmake.cancel({ ticketId: ticket }).catch((error) => show("arena-error", error));
}

async function play(room: string) {
  ticketId = undefined;
  roomId = room;
  try {
    const joined = await client.arena.join({ roomId: room });
    arenaState("in the room: walk into your opponent three times", true);
    drawBoard(joined.players);
  } catch (error) {
    roomId = undefined;
    arenaState("not playing", false);
    show("arena-error", error);
  }
}

type Player = { userId: bigint; x: number; y: number; hp: number };

function drawBoard(players: Player[]) {
  const board = $("board");
  if (board.childElementCount !== 400) {
    board.replaceChildren(...Array.from({ length: 400 }, () => document.createElement("div")));
  }
  for (const cell of Array.from(board.children)) {
    cell.className = "";
    cell.textContent = "";
    delete (cell as HTMLElement).dataset.user;
  }
  for (const player of players) {
    const cell = board.children[player.y * 20 + player.x] as HTMLElement | undefined;
    if (!cell) continue;
    cell.className = player.hp <= 0 ? "out" : player.userId === myId ? "me" : "them";
    cell.textContent = String(player.hp);
    cell.dataset.user = player.userId.toString();
    cell.dataset.x = String(player.x);
  }
}

function move(dx: number, dy: number) {
  if (roomId === undefined) return;
  client.arena.move({ roomId, dx, dy }).catch((error) => show("arena-error", error));
}

$("find-duel").onclick = () => void findDuel();
$("cancel-duel").onclick = () => void cancelDuel();
for (const button of Array.from($("pad").querySelectorAll("button"))) {
  button.onclick = () => move(Number(button.dataset.dx), Number(button.dataset.dy));
}
document.addEventListener("keydown", (event) => {
  const arrows: Record<string, [number, number]> = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
  const step = arrows[event.key];
  if (step && roomId !== undefined && !(event.target instanceof HTMLInputElement)) {
    event.preventDefault();
    move(...step);
  }
});

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
