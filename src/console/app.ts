/**
 * The browser console (issue 14): watch and drive sessions. Built only on `pi-server/client` and its view store; no
 * framework (a few hundred lines of DOM code do not need one, adr/0019). Everything the server or the agent says is
 * put on the page as text (textContent), never as HTML.
 */
import {
  createPiClient,
  createSessionStore,
  type DialogQuestion,
  type PiClient,
  PiClientError,
  type SessionFrame,
  type SessionHandle,
  type SessionStore,
  type SessionView,
} from "../client/index.js";

type Summary = Awaited<ReturnType<PiClient["listSessions"]>>[number];
type Block = { type?: string; text?: string; thinking?: string; name?: string; arguments?: Record<string, unknown> } & Record<string, unknown>;
type Message = { role?: string; content?: unknown; stopReason?: string; toolName?: string; errorMessage?: string } & Record<string, unknown>;

const TOKEN_KEY = "pi-server-console-token";
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// ---------------------------------------------------------------------------------------------------------------
// State

let client: PiClient | undefined;
let sessions: Summary[] = [];
let current: { handle: SessionHandle; store: SessionStore; off: Array<() => void>; rendered: number; opened: boolean } | undefined;
let countdown: ReturnType<typeof setInterval> | undefined;
let commands: Array<{ name: string; description?: string }> = [];
/** Images chosen for the next message (base64, as pi takes them). */
let attachments: Array<{ type: "image"; data: string; mimeType: string; name: string }> = [];

// ---------------------------------------------------------------------------------------------------------------
// Connection

function defaultUrl(): string {
  const path = document.querySelector<HTMLMetaElement>('meta[name="pi-server-path"]')?.content || "/";
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

function setStatus(text: string, kind: string): void {
  const badge = $("status");
  badge.textContent = text;
  badge.className = `badge ${kind}`;
}

function connect(): void {
  closeSession();
  client?.close();
  clearInterval(countdown);
  const token = $<HTMLInputElement>("token").value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  const next = createPiClient({
    url: $<HTMLInputElement>("url").value.trim() || defaultUrl(),
    // Sent as the `bearer.` subprotocol (never in a URL); read at every reconnect.
    token: () => sessionStorage.getItem(TOKEN_KEY) ?? undefined,
    keepAlive: { intervalMs: 15_000, timeoutMs: 5_000 },
    retry: { initialDelayMs: 300, maxDelayMs: 10_000 },
  });
  client = next;
  next.on("connecting", () => setStatus("connecting", "reconnecting"));
  next.on("connected", () => {
    clearInterval(countdown);
    setStatus("connected", "connected");
    $<HTMLButtonElement>("create").disabled = false;
    void refreshSessions();
  });
  next.on("disconnected", () => setStatus("disconnected", "offline"));
  next.on("reconnecting", (attempt, delayMs) => {
    const until = Date.now() + delayMs;
    clearInterval(countdown);
    const tick = () => setStatus(`reconnecting in ${Math.max(0, (until - Date.now()) / 1000).toFixed(1)} s (attempt ${attempt})`, "reconnecting");
    tick();
    countdown = setInterval(tick, 100);
  });
  next.on("closed", () => {
    clearInterval(countdown);
    if (client === next) setStatus("closed", "closed");
  });
  next.on("error", (error) => {
    if (error instanceof PiClientError && error.code === "client_closed") toast(error.message, "error");
  });
  next.on("notice", (frame) => {
    if (frame.type === "session_created" || frame.type === "session_deleted") void refreshSessions();
    if (frame.type === "server_shutdown") toast("The server is shutting down", "warning");
  });
  next.on("resynced", (sessionId) => {
    if (current?.handle.sessionId === sessionId && current.opened) showBanner("Resynced: the server restarted or this page fell too far behind; the conversation was reloaded.");
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions

async function refreshSessions(): Promise<void> {
  if (!client) return;
  try {
    sessions = await client.listSessions();
  } catch (error) {
    // Losing the connection is shown by the status badge; the list comes back with it.
    const quiet = error instanceof PiClientError && ["shutting_down", "connection_lost", "client_closed", "request_timeout"].includes(error.code);
    if (!quiet) toast(`Could not list sessions: ${(error as Error).message}`, "error");
    return;
  }
  renderSessions();
}

function stateOf(summary: Summary): string {
  if (summary.status === "dormant") return "dormant";
  if ((summary.pendingDialogs ?? 0) > 0) return "dialog";
  if (summary.state?.isCompacting) return "compacting";
  if (summary.state?.isStreaming) return "streaming";
  return "idle";
}

function renderSessions(): void {
  const list = $("sessions");
  list.replaceChildren(
    ...sessions.map((summary) => {
      const item = el("li");
      item.dataset["sessionId"] = summary.sessionId;
      if (current?.handle.sessionId === summary.sessionId) item.classList.add("selected");
      const row = el("div", "row");
      const state = stateOf(summary);
      row.append(el("span", "name", summary.state?.sessionName ?? summary.sessionId), el("span", `badge ${state}`, state));
      const remove = el("button", "delete", "×");
      remove.type = "button";
      remove.title = "Delete session";
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        void client?.deleteSession(summary.sessionId).catch((error: Error) => toast(error.message, "error"));
      });
      row.append(remove);
      const model = summary.state?.model ? `${summary.state.model.provider}/${summary.state.model.id}` : "";
      const meta = el("div", "meta", [summary.owner ? `owner ${summary.owner}` : "", model, `${summary.subscribers} watching`, summary.cwd].filter(Boolean).join(" · "));
      item.append(row, meta);
      item.addEventListener("click", () => void openSession(summary.sessionId));
      return item;
    }),
  );
}

async function createSession(): Promise<void> {
  if (!client) return;
  try {
    const handle = await client.createSession();
    await openSession(handle.sessionId);
  } catch (error) {
    toast(`Could not create a session: ${(error as Error).message}`, "error");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One session

function closeSession(): void {
  if (!current) return;
  for (const off of current.off) off();
  current.store.dispose();
  void current.handle.close();
  current = undefined;
  hideBanner();
}

async function openSession(sessionId: string): Promise<void> {
  if (!client || current?.handle.sessionId === sessionId) return;
  closeSession();
  // An unknown epoch asks the server for a snapshot: the page starts from the whole conversation, then live events
  // in the server's default encoding (pi RPC's own: deltas the view store appends).
  const handle = client.session(sessionId, { cursor: { seq: 0, epoch: "console" } });
  const store = createSessionStore(handle);
  current = { handle, store, off: [], rendered: 0, opened: false };
  $("messages").replaceChildren();
  $("notices").replaceChildren();
  current.off.push(store.subscribe(scheduleRender));
  current.off.push(handle.on("*", (frame) => notice(frame)));
  handle.onDialog((request, { signal }) => ask(request, signal));
  try {
    await handle.subscribe();
  } catch (error) {
    toast(`Could not open ${sessionId}: ${(error as Error).message}`, "error");
    closeSession();
    return;
  }
  current.opened = true; // the first snapshot is how the page starts, not news
  for (const id of ["input", "send", "follow-up", "abort", "attach-button"]) $<HTMLButtonElement>(id).disabled = false;
  renderSessions();
  render();
  commands = await handle.getCommands().catch(() => []);
}

let renderQueued = false;
/** A streaming reply changes the view per token: draw it at most once per frame. */
function scheduleRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render(): void {
  if (!current) return;
  const view = current.store.getSnapshot();
  renderHead(view);
  const messages = $("messages");
  // pi 1.6 keeps the system prompt as a message of the conversation: not something to read in a chat.
  const shown = view.messages.filter((message) => message.role !== "system");
  // Finished messages only grow, except after a resync or refresh: then everything is drawn again.
  if (shown.length < current.rendered || messages.childElementCount !== current.rendered) {
    messages.replaceChildren();
    current.rendered = 0;
  }
  for (const message of shown.slice(current.rendered)) messages.append(renderMessage(message as Message));
  current.rendered = shown.length;
  const streaming = $("streaming");
  streaming.replaceChildren(...(view.streaming ? [renderMessage(view.streaming as Message, "stream")] : []));
  $("tools").replaceChildren(
    ...Object.values(view.pendingTools).map((tool) => {
      const card = el("div", "tool");
      card.append(el("div", "tool-name", `${tool.toolName} — running`), el("pre", "", text(tool.partialResult ?? "")));
      return card;
    }),
    // Direct `bash` commands (of any client) stream their output too.
    ...view.bash.map((run) => {
      const card = el("div", "tool bash-output");
      card.append(el("div", "tool-name", "bash output"), el("pre", "", run.output));
      return card;
    }),
  );
  const queue = $("queue");
  const waiting = [...view.queue.steering.map((m) => `steer: ${m}`), ...view.queue.followUp.map((m) => `follow-up: ${m}`)];
  queue.hidden = waiting.length === 0;
  queue.textContent = waiting.length ? `Queued — ${waiting.join(" · ")}` : "";
  $<HTMLButtonElement>("send").textContent = view.isStreaming ? "Steer" : "Send";
  if (view.stale) void current.store.refresh();
  const scroller = $("scroller");
  scroller.scrollTop = scroller.scrollHeight;
}

function renderHead(view: SessionView): void {
  if (!current) return;
  const head = $("session-head");
  const state = Object.keys(view.dialogs).length ? "dialog" : view.isStreaming ? "streaming" : "idle";
  head.replaceChildren(el("strong", "", current.handle.sessionId), el("span", `badge ${state}`, state));
  const debug = $("debug-line");
  debug.hidden = !$<HTMLInputElement>("debug").checked;
  const cursor = current.handle.cursor;
  debug.textContent = `seq ${cursor?.seq ?? "-"} · epoch ${cursor?.epoch ?? "-"} · last ${view.lastSeq}`;
}

function renderMessage(message: Message, className = "msg"): HTMLElement {
  const box = el("div", `${className} ${message.role ?? ""}${message["isError"] === true ? " error" : ""}`);
  const role = el("div", "role", message.role === "toolResult" ? `result · ${message.toolName ?? ""}` : message.role ?? "message");
  if (message.role === "assistant" && message.stopReason && message.stopReason !== "stop" && message.stopReason !== "toolUse" && className === "msg") {
    role.append(el("span", "stop-reason", message.stopReason));
  }
  box.append(role);
  const content = typeof message.content === "string" ? [{ type: "text", text: message.content }] : ((message.content ?? []) as Block[]);
  for (const block of content) {
    if (block.type === "text") {
      box.append(message.role === "toolResult" ? el("pre", "", block.text ?? "") : el("div", "text", block.text ?? ""));
    } else if (block.type === "thinking") {
      const details = el("details", "thinking");
      details.append(el("summary", "", "thinking"), el("div", "text", block.thinking ?? ""));
      box.append(details);
    } else if (block.type === "toolCall") {
      box.append(toolCard(block));
    } else if (block.type === "image") {
      box.append(el("div", "muted", "[image]"));
    }
  }
  if (message.errorMessage) box.append(el("div", "stop-reason", message.errorMessage));
  return box;
}

function toolCard(block: Block): HTMLElement {
  const card = el("div", "tool");
  const args = block.arguments ?? {};
  card.append(el("div", "tool-name", String(block.name ?? "tool")));
  if (block.name === "bash" && typeof args["command"] === "string") card.append(el("pre", "", `$ ${args["command"]}`));
  else if (block.name === "edit" && typeof args["oldText"] === "string") {
    const diff = el("pre", "diff");
    diff.append(el("div", "", String(args["path"] ?? "")));
    for (const line of String(args["oldText"]).split("\n")) diff.append(el("div", "del", `- ${line}`));
    for (const line of String(args["newText"] ?? "").split("\n")) diff.append(el("div", "add", `+ ${line}`));
    card.append(diff);
  } else card.append(el("pre", "", JSON.stringify(args, null, 2)));
  return card;
}

function text(value: unknown): string {
  if (typeof value === "string") return value;
  const content = (value as { content?: Block[] } | undefined)?.content;
  if (Array.isArray(content)) return content.map((b) => b.text ?? "").join("");
  return JSON.stringify(value ?? "", null, 2);
}

/** Server notices worth a line: stops, breakers, compaction, retries, resyncs, conflicts. */
function notice(frame: SessionFrame): void {
  const add = (line: string, bad = false) => {
    const item = el("li", bad ? "bad" : "", `${new Date().toLocaleTimeString()} ${line}`);
    if ($<HTMLInputElement>("debug").checked && frame.type === "event") item.textContent += ` [seq ${frame.seq}${frame.conflated ? `, conflated ${frame.conflated}` : ""}]`;
    $("notices").append(item);
  };
  if (frame.type === "resync") {
    if (current?.opened) add("resynced from a snapshot");
    return;
  }
  const event = frame.event as { type: string } & Record<string, unknown>;
  switch (event.type) {
    case "run_aborted":
      add(`run aborted (${String(event["reason"])}): ${String(event["message"] ?? "")}`, true);
      break;
    case "run_interrupted":
      add("the run was interrupted by a server restart", true);
      break;
    case "circuit":
      add(`breaker ${String(event["breaker"])} ${String(event["key"])} is ${String(event["state"])}`, event["state"] === "open");
      break;
    case "compaction_start":
      add("compacting the conversation…");
      break;
    case "compaction_end":
      add("compaction finished");
      break;
    case "auto_retry_start":
      add(`retrying (attempt ${String(event["attempt"])})`, true);
      break;
    case "summarization_retry_scheduled":
      add(`retrying the summary (attempt ${String(event["attempt"])})`, true);
      break;
    case "session_conflict":
      add("another process wrote this conversation: reloading it", true);
      break;
    case "extension_error":
      add(`extension error: ${String(event["error"])}`, true);
      break;
    case "extension_ui_request":
      uiRequest(event);
      break;
  }
  renderSessionsLater();
}

let sessionsTimer: ReturnType<typeof setTimeout> | undefined;
/** Session badges follow the stream, at most a few times a second. */
function renderSessionsLater(): void {
  sessionsTimer ??= setTimeout(() => {
    sessionsTimer = undefined;
    void refreshSessions();
  }, 500);
}

function uiRequest(event: Record<string, unknown>): void {
  switch (event["method"]) {
    case "notify":
      toast(String(event["message"]), String(event["notifyType"] ?? "info"));
      break;
    case "setTitle":
      document.title = `${String(event["title"])} — pi-server console`;
      break;
    case "setStatus":
      keyed("status", String(event["statusKey"]), event["statusText"] === undefined ? undefined : [String(event["statusText"])]);
      break;
    case "setWidget":
      keyed("widget", String(event["widgetKey"]), Array.isArray(event["widgetLines"]) ? (event["widgetLines"] as unknown[]).map(String) : undefined);
      break;
    case "cancel":
      // The handle has already closed the modal (its signal aborted); say why.
      if (shownDialogs.delete(String(event["id"]))) toast(`Dialog closed (${String(event["reason"])})`, "info");
      break;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Dialogs

/** An extension's status line or widget, by key (undefined lines remove it). */
function keyed(kind: "status" | "widget", key: string, lines: string[] | undefined): void {
  const area = $("extension-ui");
  const id = `${kind}:${key}`;
  const existing = [...area.children].find((child) => (child as HTMLElement).dataset["key"] === id);
  if (!lines) {
    existing?.remove();
    area.hidden = area.childElementCount === 0;
    return;
  }
  const box = el(kind === "status" ? "span" : "div", kind, kind === "status" ? `${key}: ${lines.join(" ")}` : undefined);
  box.dataset["key"] = id;
  if (kind === "widget") box.append(el("div", "widget-title", key), ...lines.map((line) => el("div", "", line)));
  if (existing) existing.replaceWith(box);
  else area.append(box);
  area.hidden = false;
}

/** Dialogs this page put up, until the server says how each ended. */
const shownDialogs = new Set<string>();

function ask(request: DialogQuestion, signal: AbortSignal): Promise<string | boolean | undefined> {
  const modal = $("modal");
  shownDialogs.add(request.id);
  const box = el("div", "box");
  box.append(el("h3", "", request.title));
  if (request.method === "confirm") box.append(el("p", "", request.message));
  if (request.timeout) box.append(el("p", "muted", `Answer within ${Math.round(request.timeout / 1000)} s, or pi decides.`));
  modal.replaceChildren(box);
  modal.dataset["dialogId"] = request.id;
  modal.hidden = false;
  return new Promise((resolve) => {
    const done = (answer: string | boolean | undefined) => {
      modal.hidden = true;
      delete modal.dataset["dialogId"];
      resolve(answer);
    };
    signal.addEventListener("abort", () => done(undefined), { once: true });
    const buttons = el("div", "buttons");
    const button = (label: string, answer: () => string | boolean | undefined, primary = false) => {
      const b = el("button", primary ? "primary" : "", label);
      b.type = "button";
      b.addEventListener("click", () => done(answer()));
      return b;
    };
    if (request.method === "select") {
      const choices = el("div", "choices");
      for (const option of request.options) choices.append(button(option, () => option));
      box.append(choices);
    } else if (request.method === "input" || request.method === "editor") {
      const field = request.method === "editor" ? el("textarea") : el("input");
      if (request.method === "editor") field.value = request.prefill ?? "";
      else (field as HTMLInputElement).placeholder = request.placeholder ?? "";
      box.append(field);
      buttons.append(button("OK", () => field.value, true));
    }
    if (request.method === "confirm") {
      buttons.append(button("No", () => false), button("Yes", () => true, true));
    } else buttons.append(button("Cancel", () => undefined));
    box.append(buttons);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Composer, toasts, banner

async function send(kind: "auto" | "followUp"): Promise<void> {
  if (!current) return;
  const input = $<HTMLTextAreaElement>("input");
  const message = input.value.trim();
  if (!message) return;
  input.value = "";
  $("suggestions").hidden = true;
  const streaming = current.store.getSnapshot().isStreaming;
  const images = attachments.map(({ type, data, mimeType }) => ({ type, data, mimeType }));
  // The whole frame must fit the server's limit (a bigger one closes the connection with 1009).
  const size = new TextEncoder().encode(JSON.stringify({ type: "prompt", id: "c0000", sessionId: current.handle.sessionId, message, images })).length + 100;
  if (size > maxPayload()) {
    toast(`Too big to send: ${Math.ceil(size / 1024)} KiB, the server takes ${Math.floor(maxPayload() / 1024)} KiB per message; the images were removed`, "error");
    input.value = message;
    setAttachments([]);
    return;
  }
  setAttachments([]);
  try {
    const withImages = images.length ? images : undefined;
    if (kind === "followUp") await current.handle.followUp(message, withImages);
    else if (streaming) await current.handle.steer(message, withImages);
    else await current.handle.prompt(message, { idempotencyKey: crypto.randomUUID(), ...(withImages ? { images: withImages } : {}) });
  } catch (error) {
    toast((error as Error).message, "error");
    input.value = message;
  }
}

function maxPayload(): number {
  return Number(document.querySelector<HTMLMetaElement>('meta[name="pi-server-max-payload"]')?.content) || 1024 * 1024;
}

function setAttachments(next: typeof attachments): void {
  attachments = next;
  $("attachments").textContent = next.length ? `${next.map((a) => a.name).join(", ")} (${Math.ceil(next.reduce((n, a) => n + a.data.length, 0) / 1024)} KiB)` : "";
}

async function attach(files: FileList | null): Promise<void> {
  const read = (file: File) =>
    new Promise<(typeof attachments)[number]>((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve({ type: "image", data: String(reader.result).split(",")[1] ?? "", mimeType: file.type, name: file.name });
      reader.onerror = () => reject(reader.error ?? new Error("unreadable"));
      reader.readAsDataURL(file);
    });
  try {
    setAttachments([...attachments, ...(await Promise.all([...(files ?? [])].map(read)))]);
  } catch (error) {
    toast(`Could not read the image: ${(error as Error).message}`, "error");
  }
}

function suggest(): void {
  const box = $("suggestions");
  const value = $<HTMLTextAreaElement>("input").value;
  const matches = value.startsWith("/") && !value.includes(" ") ? commands.filter((c) => `/${c.name}`.startsWith(value)).slice(0, 12) : [];
  box.hidden = matches.length === 0;
  box.replaceChildren(
    ...matches.map((command) => {
      const item = el("button", "", `/${command.name}${command.description ? ` — ${command.description}` : ""}`);
      item.type = "button";
      item.addEventListener("click", () => {
        $<HTMLTextAreaElement>("input").value = `/${command.name} `;
        box.hidden = true;
        $("input").focus();
      });
      return item;
    }),
  );
}

function toast(message: string, kind = "info"): void {
  const item = el("div", `toast ${kind}`, message);
  $("toasts").append(item);
  setTimeout(() => item.remove(), 6_000);
}

function showBanner(text: string): void {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner(): void {
  $("banner").hidden = true;
}

// ---------------------------------------------------------------------------------------------------------------

$<HTMLInputElement>("url").value = defaultUrl();
$<HTMLInputElement>("token").value = sessionStorage.getItem(TOKEN_KEY) ?? "";
$("connect").addEventListener("submit", (event) => {
  event.preventDefault();
  connect();
});
$("create").addEventListener("click", () => void createSession());
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  void send("auto");
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    void send("auto");
  }
});
$("input").addEventListener("input", suggest);
$("follow-up").addEventListener("click", () => void send("followUp"));
$("attach-button").addEventListener("click", () => $("attach").click());
$("attach").addEventListener("change", () => {
  const input = $<HTMLInputElement>("attach");
  void attach(input.files).then(() => {
    input.value = "";
  });
});
$("abort").addEventListener("click", () => void current?.handle.abort().catch((error: Error) => toast(error.message, "error")));
$("debug").addEventListener("change", () => render());
connect();
