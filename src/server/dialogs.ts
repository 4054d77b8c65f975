import { randomUUID } from "node:crypto";
import type { ExtensionUIContext, ExtensionUIDialogOptions } from "@earendil-works/pi-coding-agent";
import type { Logger } from "pino";
import type { EventHub } from "./event-hub.js";
import type { FrameBytes } from "./wire-frame.js";
import { MAX_TIMER_MS } from "./options.js";

export type DialogEndReason = "answered" | "timeout" | "aborted" | "deleted" | "shutdown" | "unanswerable";

/** pi RPC's `extension_ui_response` payload (without `type`/`id`). */
export interface DialogAnswer {
  readonly value?: string;
  readonly confirmed?: boolean;
  readonly cancelled?: boolean;
}

interface PendingDialog {
  /** The numbered event frame that announced the dialog; re-sent to clients that subscribe later. */
  readonly frame: FrameBytes;
  readonly seq: number;
  end(answer: DialogAnswer | undefined, reason: DialogEndReason): void;
}

/**
 * A session's pending extension dialogs. The first valid answer wins; a timeout, `abort` or deletion resolves pi's
 * default. Every end is announced with a `cancel` request so that other clients close the dialog (PROTOCOL.md §3.1).
 */
export class Dialogs {
  readonly #pending = new Map<string, PendingDialog>();
  readonly #hub: EventHub;
  readonly #defaultTimeoutMs: number;
  readonly #max: number;
  readonly #log: Logger;

  constructor(hub: EventHub, defaultTimeoutMs: number, max: number, log: Logger) {
    this.#hub = hub;
    this.#defaultTimeoutMs = defaultTimeoutMs;
    this.#max = max;
    this.#log = log;
  }

  get size(): number {
    return this.#pending.size;
  }

  /**
   * Frames of the dialogs still waiting for an answer, oldest first; with `upToSeq`, only those announced at or
   * before it (a resuming client gets the later ones in its replay).
   */
  pendingFrames(upToSeq = Number.POSITIVE_INFINITY): FrameBytes[] {
    return [...this.#pending.values()].filter((dialog) => dialog.seq <= upToSeq).map((dialog) => dialog.frame);
  }

  /** Resolve dialog `id` with `answer`; false when no such dialog is pending. */
  answer(id: string, answer: DialogAnswer): boolean {
    const dialog = this.#pending.get(id);
    if (!dialog) return false;
    dialog.end(answer, "answered");
    return true;
  }

  /** End every pending dialog with pi's default value. */
  cancelAll(reason: DialogEndReason): void {
    for (const dialog of [...this.#pending.values()]) dialog.end(undefined, reason);
  }

  open<T>(
    request: { method: string } & Record<string, unknown>,
    options: ExtensionUIDialogOptions | undefined,
    fallback: T,
    parse: (answer: DialogAnswer) => T,
  ): Promise<T> {
    if (options?.signal?.aborted) return Promise.resolve(fallback);
    if (this.#pending.size >= this.#max) {
      // Bounded: an extension that opens dialogs in a loop gets pi's default instead of growing memory.
      this.#log.warn({ method: request.method, max: this.#max }, "too many pending dialogs; answered with the default");
      return Promise.resolve(fallback);
    }
    const id = randomUUID();
    // An extension's own timeout is used as given, within what a timer can hold.
    const timeoutMs = Math.min(Math.max(0, options?.timeout ?? this.#defaultTimeoutMs), MAX_TIMER_MS);
    return new Promise<T>((resolve) => {
      const onAbort = () => end(undefined, "aborted");
      const timer = setTimeout(() => end(undefined, "timeout"), timeoutMs);
      timer.unref();
      const end = (answer: DialogAnswer | undefined, reason: DialogEndReason) => {
        if (!this.#pending.delete(id)) return;
        clearTimeout(timer);
        options?.signal?.removeEventListener("abort", onAbort);
        this.#hub.publish({ type: "extension_ui_request", id, method: "cancel", reason });
        resolve(answer === undefined || answer.cancelled ? fallback : parse(answer));
      };
      options?.signal?.addEventListener("abort", onAbort, { once: true });
      const frame = this.#hub.publish({ type: "extension_ui_request", id, ...request, timeout: timeoutMs });
      this.#pending.set(id, { frame, seq: this.#hub.seq, end });
    });
  }
}

/**
 * The extension UI context a session's extensions see (pi RPC mode's, over our event hub). TUI-only members are
 * inherited from pi's unbound no-op context.
 */
export function createUiContext(dialogs: Dialogs, hub: EventHub, fallback: ExtensionUIContext): ExtensionUIContext {
  const fireAndForget = (method: string, payload: Record<string, unknown>) =>
    hub.publish({ type: "extension_ui_request", id: randomUUID(), method, ...payload });
  const text = (answer: DialogAnswer) => answer.value;
  const overrides: Partial<ExtensionUIContext> = {
    select: (title, options, opts) => dialogs.open({ method: "select", title, options }, opts, undefined, text),
    confirm: (title, message, opts) =>
      dialogs.open({ method: "confirm", title, message }, opts, false, (answer) => answer.confirmed === true),
    input: (title, placeholder, opts) => dialogs.open({ method: "input", title, placeholder }, opts, undefined, text),
    editor: (title, prefill) => dialogs.open({ method: "editor", title, prefill }, undefined, undefined, text),
    notify: (message, notifyType) => {
      fireAndForget("notify", { message, notifyType });
    },
    setStatus: (statusKey, statusText) => {
      fireAndForget("setStatus", { statusKey, statusText });
    },
    setWidget: (widgetKey: string, content: unknown, options?: { placement?: string }) => {
      // Component factories need a TUI; like pi RPC mode, only string arrays (or removal) travel.
      if (content === undefined || Array.isArray(content)) {
        fireAndForget("setWidget", { widgetKey, widgetLines: content, widgetPlacement: options?.placement });
      }
    },
    setTitle: (title) => {
      fireAndForget("setTitle", { title });
    },
    setEditorText: (text) => {
      fireAndForget("set_editor_text", { text });
    },
    pasteToEditor: (text) => {
      fireAndForget("set_editor_text", { text });
    },
    getEditorText: () => "",
  };
  return Object.assign(Object.create(fallback) as ExtensionUIContext, overrides);
}
