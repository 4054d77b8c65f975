/**
 * The browser console (issue 14): watch and drive sessions. Built only on `pi-server/client` and its view store; no
 * framework (a few hundred lines of DOM code do not need one, adr/0019). Everything the server or the agent says is
 * put on the page as text (textContent), never as HTML. Issue 29: it says what is wrong (the server's reason for a
 * refused token, no reconnect loop on one), titles sessions, suggests the session's slash commands, picks the model
 * and thinking level, and works from 360 px wide.
 */
import {
  createPiClient,
  createSessionStore,
  type PiClient,
  PiClientError,
  type SessionFrame,
  type SessionHandle,
  type SessionStore,
  type SessionView,
} from "../client/index.js";
import { type AuthAnswer, checkToken, storedToken, storeToken, unsendable } from "./auth.js";
import { $, el, setStatus, toast } from "./dom.js";
import { ask, uiRequest } from "./extension-ui.js";
import { type Message, renderMessage, text } from "./messages.js";
import { Pickers } from "./pickers.js";
import { SlashSuggestions } from "./slash.js";

type Summary = Awaited<ReturnType<PiClient["listSessions"]>>[number];

// ---------------------------------------------------------------------------------------------------------------
// State

let client: PiClient | undefined;
let sessions: Summary[] = [];
let current: { handle: SessionHandle; store: SessionStore; off: Array<() => void>; rendered: number; opened: boolean } | undefined;
let countdown: ReturnType<typeof setInterval> | undefined;
/** Images chosen for the next message (base64, as pi takes them). */
let attachments: Array<{ type: "image"; data: string; mimeType: string; name: string }> = [];
/** The session to open again once the next connection is up (after a new token). */
let reopen: string | undefined;
/** What the last auth check said while the connection was down (shown with the countdown). */
let problem = "";
const pickers = new Pickers(() => void refreshSessions());
const slash = new SlashSuggestions();

// ---------------------------------------------------------------------------------------------------------------
// Connection and authentication

function wsUrl(): string {
  const path = document.querySelector<HTMLMetaElement>('meta[name="pi-server-path"]')?.content || "/";
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
}

/**
 * Ask the server whether it takes `token` (or needs one), then connect, or show the auth form with its reason. No
 * auth configured: the page connects without asking.
 */
async function start(token = storedToken()): Promise<void> {
  stop();
  setStatus("checking", "reconnecting");
  const answer = await checkToken(token);
  if (answer.kind === "refused") {
    refused(answer, token);
    return;
  }
  hideAuth();
  if (answer.kind === "accepted" && token) {
    storeToken(token);
    showWho(answer.principal);
  }
  connect(token);
}

function connect(token: string | undefined): void {
  const next = createPiClient({
    url: wsUrl(),
    // Sent as the `bearer.` subprotocol (never in a URL). A new token makes a new client.
    token,
    keepAlive: { intervalMs: 15_000, timeoutMs: 5_000 },
    retry: { initialDelayMs: 300, maxDelayMs: 10_000 },
  });
  client = next;
  problem = "";
  // A client replaced by a newer one (a new token) says nothing more on this page.
  const mine = (listener: () => void) => () => {
    if (client === next) listener();
  };
  next.on("connecting", mine(() => setStatus(problem ? `${problem} — connecting` : "connecting", "reconnecting")));
  next.on(
    "connected",
    mine(() => {
      clearInterval(countdown);
      problem = "";
      setStatus("connected", "connected");
      $<HTMLButtonElement>("create").disabled = false;
      void refreshSessions();
      if (reopen) void openSession(reopen);
      reopen = undefined;
    }),
  );
  next.on("disconnected", mine(() => setStatus("disconnected", "offline")));
  next.on("reconnecting", (attempt, delayMs) => {
    if (client !== next) return;
    const until = Date.now() + delayMs;
    clearInterval(countdown);
    const tick = () => {
      const wait = `reconnecting in ${Math.max(0, (until - Date.now()) / 1000).toFixed(1)} s (attempt ${attempt})`;
      setStatus(problem ? `${problem} — ${wait}` : wait, "reconnecting");
    };
    tick();
    countdown = setInterval(tick, 100);
    // A browser cannot tell a refused token from a dead server: ask, and stop for good on a refusal.
    void recheck(next, token);
  });
  // Stopped trying (a final connect error): say why, offer to try again, and ask whether it was the token.
  next.on("failed", (error) => {
    if (client !== next) return;
    clearInterval(countdown);
    setStatus(`not connected: ${error.message}`, "closed");
    $("reconnect").hidden = false;
    void recheck(next, token);
  });
  next.on(
    "closed",
    mine(() => {
      clearInterval(countdown);
      setStatus("closed", "closed");
      $("reconnect").hidden = false;
    }),
  );
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

let rechecking: Promise<void> | undefined;
/** While `of` reconnects: is it the token? One check at a time. */
function recheck(of: PiClient, token: string | undefined): Promise<void> {
  rechecking ??= checkToken(token)
    .then((answer) => {
      if (client !== of) return;
      if (answer.kind === "refused") {
        reopen = current?.handle.sessionId;
        refused(answer, token);
      } else problem = answer.kind === "unreachable" ? "server unreachable" : "";
    })
    .finally(() => {
      rechecking = undefined;
    });
  return rechecking;
}

/** Close the connection and everything shown through it. */
function stop(): void {
  const old = client;
  client = undefined;
  closeSession();
  old?.close();
  clearInterval(countdown);
  $<HTMLButtonElement>("create").disabled = true;
  $("reconnect").hidden = true;
  sessions = [];
  renderSessions();
}

/** The server refused the token (or needs one): no reconnecting, the form, and the server's reason. */
function refused(answer: Extract<AuthAnswer, { kind: "refused" }>, token: string | undefined): void {
  stop();
  storeToken(undefined); // a refused token is not tried again
  const missing = answer.code === "missing_token" && !token;
  const forbidden = answer.status === 403;
  setStatus(missing ? "token needed" : forbidden ? "refused" : "token rejected", missing ? "waiting" : "closed");
  showAuth(
    missing ? "This server needs a token." : forbidden ? "The server refuses this page." : "The server did not accept the token.",
    missing ? undefined : `${forbidden ? "refused" : "token rejected"}: ${answer.message}`,
  );
}

function showAuth(message: string, error: string | undefined): void {
  $("auth-message").textContent = message;
  const line = $("auth-error");
  line.textContent = error ?? "";
  line.hidden = error === undefined;
  $("auth").hidden = false;
  $("main").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("token").focus();
}

function hideAuth(): void {
  $("auth").hidden = true;
  $("main").hidden = false;
}

function showWho(principal: string): void {
  const who = $("who");
  who.textContent = principal;
  who.title = `signed in as ${principal}`;
  who.hidden = false;
  $("sign-out").hidden = false;
}

function submitToken(): void {
  const field = $<HTMLInputElement>("token");
  const token = field.value.trim();
  const why = token ? unsendable(token) : "type the token first";
  if (why) {
    const line = $("auth-error");
    line.textContent = `token not sent: ${why}`;
    line.hidden = false;
    return;
  }
  field.value = "";
  void start(token);
}

// ---------------------------------------------------------------------------------------------------------------
// Sessions

async function refreshSessions(): Promise<void> {
  const asked = client;
  if (!asked) return;
  try {
    sessions = await asked.listSessions();
  } catch (error) {
    // Losing the connection is shown by the status badge; the list comes back with it.
    const quiet = error instanceof PiClientError && ["shutting_down", "connection_lost", "client_closed", "request_timeout"].includes(error.code);
    if (!quiet) toast(`Could not list sessions: ${(error as Error).message}`, "error");
    return;
  }
  if (asked !== client) return;
  renderSessions();
  const shown = sessions.find((summary) => summary.sessionId === current?.handle.sessionId);
  if (shown?.state) pickers.follow(shown.state);
}

function stateOf(summary: Summary): string {
  if (summary.status === "dormant") return "dormant";
  if ((summary.pendingDialogs ?? 0) > 0) return "dialog";
  if (summary.state?.isCompacting) return "compacting";
  if (summary.state?.isStreaming) return "streaming";
  return "idle";
}

/** The name, else the first prompt's first words (the server's `title`); never just an id. */
function titleOf(sessionId: string): string {
  return sessions.find((summary) => summary.sessionId === sessionId)?.title ?? "New session";
}

/** A UUID by its first block (enough to tell sessions apart in a list); a chosen id as it is. */
function shortId(sessionId: string): string {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-/i.test(sessionId) ? `${sessionId.slice(0, 8)}…` : sessionId;
}

function renderSessions(): void {
  const list = $("sessions");
  list.replaceChildren(
    ...sessions.map((summary) => {
      const item = el("li");
      item.dataset["sessionId"] = summary.sessionId;
      item.title = summary.sessionId;
      if (current?.handle.sessionId === summary.sessionId) item.classList.add("selected");
      const row = el("div", "row");
      const state = stateOf(summary);
      row.append(el("span", summary.title ? "name" : "name untitled", summary.title ?? "New session"), el("span", `badge ${state}`, state));
      const remove = el("button", "delete", "×");
      remove.type = "button";
      remove.title = "Delete session";
      remove.setAttribute("aria-label", "Delete session");
      remove.addEventListener("click", (event) => {
        event.stopPropagation();
        void client?.deleteSession(summary.sessionId).catch((error: Error) => toast(error.message, "error"));
      });
      row.append(remove);
      const model = summary.state?.model ? `${summary.state.model.provider}/${summary.state.model.id}` : "";
      const meta = el(
        "div",
        "meta",
        [shortId(summary.sessionId), summary.owner ? `owner ${summary.owner}` : "", model, `${summary.subscribers} watching`, summary.cwd].filter(Boolean).join(" · "),
      );
      item.append(row, meta);
      item.addEventListener("click", () => void openSession(summary.sessionId));
      return item;
    }),
  );
  $("no-sessions").hidden = sessions.length > 0 || client === undefined;
  if (current) renderHead(current.store.getSnapshot());
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

const SESSION_CONTROLS = ["input", "send", "follow-up", "abort", "attach-button"];

function closeSession(): void {
  if (!current) return;
  for (const off of current.off) off();
  current.store.dispose();
  void current.handle.close();
  current = undefined;
  hideBanner();
  pickers.clear();
  slash.set([]);
  for (const id of SESSION_CONTROLS) $<HTMLButtonElement>(id).disabled = true;
  $("title").textContent = "Pick a session, or create one.";
  $("title").className = "title muted";
  $("state").hidden = true;
  $("rename").hidden = true;
  $("rename-form").hidden = true;
  $("session-id").textContent = "";
  delete $("session-head").dataset["sessionId"];
  $("messages").replaceChildren();
  $("streaming").replaceChildren();
  $("tools").replaceChildren();
  document.body.classList.remove("in-session");
}

async function openSession(sessionId: string): Promise<void> {
  if (!client || current?.handle.sessionId === sessionId) return;
  closeSession();
  // An unknown epoch asks the server for a snapshot: the page starts from the whole conversation, then live events
  // in the server's default encoding (pi RPC's own: deltas the view store appends).
  const handle = client.session(sessionId, { cursor: { seq: 0, epoch: "console" } });
  const store = createSessionStore(handle);
  current = { handle, store, off: [], rendered: 0, opened: false };
  document.body.classList.add("in-session");
  $("session-head").dataset["sessionId"] = sessionId;
  $("messages").replaceChildren();
  $("notices").replaceChildren();
  current.off.push(store.subscribe(scheduleRender));
  current.off.push(handle.on("*", (frame) => notice(frame)));
  handle.onDialog((request, { signal }) => ask(request, signal));
  try {
    await handle.subscribe();
  } catch (error) {
    toast(`Could not open ${sessionId}: ${(error as Error).message}`, "error");
    if (current?.handle === handle) closeSession();
    return;
  }
  if (current?.handle !== handle) return;
  current.opened = true; // the first snapshot is how the page starts, not news
  for (const id of SESSION_CONTROLS) $<HTMLButtonElement>(id).disabled = false;
  renderSessions();
  render();
  const [commands] = await Promise.all([handle.getCommands().catch(() => []), pickers.load(handle)]);
  if (current?.handle === handle) slash.set(commands);
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
  const sessionId = current.handle.sessionId;
  const title = $("title");
  title.textContent = titleOf(sessionId);
  title.className = "title";
  title.title = title.textContent;
  const state = Object.keys(view.dialogs).length ? "dialog" : view.isStreaming ? "streaming" : "idle";
  const badge = $("state");
  badge.textContent = state;
  badge.className = `badge ${state}`;
  badge.hidden = false;
  $("rename").hidden = !$("rename-form").hidden;
  $("session-id").textContent = sessionId;
  const debug = $("debug-line");
  debug.hidden = !$<HTMLInputElement>("debug").checked;
  const cursor = current.handle.cursor;
  debug.textContent = `seq ${cursor?.seq ?? "-"} · epoch ${cursor?.epoch ?? "-"} · last ${view.lastSeq}`;
}

function startRename(): void {
  if (!current) return;
  const input = $<HTMLInputElement>("rename-input");
  input.value = sessions.find((s) => s.sessionId === current?.handle.sessionId)?.state?.sessionName ?? "";
  $("rename-form").hidden = false;
  $("rename").hidden = true;
  input.focus();
}

function endRename(): void {
  $("rename-form").hidden = true;
  $("rename").hidden = current === undefined;
}

async function rename(): Promise<void> {
  const handle = current?.handle;
  const name = $<HTMLInputElement>("rename-input").value.trim();
  if (!handle || !name) return;
  try {
    await handle.setSessionName(name);
    endRename();
    await refreshSessions();
  } catch (error) {
    toast(`Could not rename the session: ${(error as Error).message}`, "error");
  }
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
/** Session badges and titles follow the stream, at most a few times a second. */
function renderSessionsLater(): void {
  sessionsTimer ??= setTimeout(() => {
    sessionsTimer = undefined;
    void refreshSessions();
  }, 500);
}

// ---------------------------------------------------------------------------------------------------------------
// Composer, banner

async function send(kind: "auto" | "followUp"): Promise<void> {
  if (!current) return;
  const input = $<HTMLTextAreaElement>("input");
  const message = input.value.trim();
  if (!message) return;
  input.value = "";
  slash.hide();
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

function showBanner(text: string): void {
  const banner = $("banner");
  banner.textContent = text;
  banner.hidden = false;
}

function hideBanner(): void {
  $("banner").hidden = true;
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

$("auth-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitToken();
});
$("sign-out").addEventListener("click", () => {
  reopen = current?.handle.sessionId;
  stop();
  storeToken(undefined);
  setStatus("token needed", "offline");
  showAuth("Connect with another token.", undefined);
});
$("reconnect").addEventListener("click", () => void start());
$("create").addEventListener("click", () => void createSession());
$("back").addEventListener("click", () => {
  closeSession();
  renderSessions();
});
$("rename").addEventListener("click", startRename);
$("rename-cancel").addEventListener("click", endRename);
$("rename-form").addEventListener("submit", (event) => {
  event.preventDefault();
  void rename();
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  void send("auto");
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    void send("auto");
  }
});
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
void start();
