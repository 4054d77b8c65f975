/**
 * The model and thinking-level pickers of the open session (issue 29): filled from the server's lists
 * (`get_available_models`, `get_available_thinking_levels`), showing what `get_state` says is current, and changed
 * with `set_model` / `set_thinking_level`. The thinking levels depend on the model, so they are read again after a
 * model change.
 */
import type { SessionHandle } from "../client/index.js";
import { $, el, toast } from "./dom.js";

type Model = Awaited<ReturnType<SessionHandle["getAvailableModels"]>>[number];
type Level = Awaited<ReturnType<SessionHandle["getAvailableThinkingLevels"]>>[number];
/** What a list summary or `get_state` says the session uses now. */
export interface Current {
  readonly model?: { readonly provider: string; readonly id: string } | null | undefined;
  readonly thinkingLevel?: string | undefined;
}

const key = (model: { provider: string; id: string }) => JSON.stringify([model.provider, model.id]);

export class Pickers {
  readonly #model = $<HTMLSelectElement>("model");
  readonly #thinking = $<HTMLSelectElement>("thinking");
  readonly #box = $("pickers");
  #handle: SessionHandle | undefined;
  #models = new Map<string, Model>();
  #shown: Current = {};
  readonly #changed: () => void;

  /** `changed`: told after this page changed the model or level (the session list shows the model too). */
  constructor(changed: () => void) {
    this.#changed = changed;
    this.#model.addEventListener("change", () => void this.#setModel());
    this.#thinking.addEventListener("change", () => void this.#setThinking());
    this.clear();
  }

  /** Fill both pickers for `handle`'s session. */
  async load(handle: SessionHandle): Promise<void> {
    this.#handle = handle;
    try {
      const [models, levels, state] = await Promise.all([handle.getAvailableModels(), handle.getAvailableThinkingLevels(), handle.getState()]);
      if (this.#handle !== handle) return;
      this.#fillModels(models, state);
      this.#fillLevels(levels, state.thinkingLevel);
      this.#shown = state;
      this.#box.hidden = false;
    } catch (error) {
      if (this.#handle === handle) toast(`Could not read the models: ${(error as Error).message}`, "error");
    }
  }

  /** Another client changed the model or thinking level (seen in the session list): show it. */
  follow(current: Current): void {
    const handle = this.#handle;
    if (!handle || this.#box.hidden) return;
    const modelChanged = current.model && (!this.#shown.model || key(current.model) !== key(this.#shown.model));
    if (modelChanged || current.thinkingLevel !== this.#shown.thinkingLevel) void this.load(handle);
  }

  clear(): void {
    this.#handle = undefined;
    this.#models.clear();
    this.#shown = {};
    this.#model.replaceChildren(el("option", "", "model"));
    this.#thinking.replaceChildren(el("option", "", "thinking"));
    this.#model.disabled = true;
    this.#thinking.disabled = true;
    this.#box.hidden = true;
  }

  #fillModels(models: readonly Model[], state: Current): void {
    this.#models = new Map(models.map((model) => [key(model), model]));
    const current = state.model ? key(state.model) : undefined;
    const options = models.map((model) => this.#option(key(model), `${model.provider}/${model.id}`, model.name && model.name !== model.id ? model.name : undefined));
    // A current model the list does not offer (its credentials went away) is still what the session uses.
    if (state.model && current !== undefined && !this.#models.has(current)) options.unshift(this.#option(current, `${state.model.provider}/${state.model.id}`, "not available"));
    if (!state.model) options.unshift(this.#option("", "no model", undefined));
    this.#model.replaceChildren(...options);
    this.#model.value = current ?? "";
    this.#model.disabled = models.length === 0;
    this.#model.title = this.#model.selectedOptions[0]?.textContent ?? "";
  }

  #fillLevels(levels: readonly Level[], current: string | undefined): void {
    const shown = current !== undefined && !levels.includes(current as Level) ? [current, ...levels] : levels;
    this.#thinking.replaceChildren(...shown.map((level) => this.#option(level, `thinking: ${level}`, undefined)));
    if (current !== undefined) this.#thinking.value = current;
    this.#thinking.disabled = levels.length <= 1;
  }

  #option(value: string, label: string, note: string | undefined): HTMLOptionElement {
    const option = el("option", "", note ? `${label} — ${note}` : label);
    option.value = value;
    return option;
  }

  async #setModel(): Promise<void> {
    const handle = this.#handle;
    const model = this.#models.get(this.#model.value);
    if (!handle || !model) return;
    try {
      await handle.setModel(model.provider, model.id);
    } catch (error) {
      toast(`Could not switch to ${model.provider}/${model.id}: ${(error as Error).message}`, "error");
    }
    await this.load(handle); // what the session uses now, and the levels this model offers
    this.#changed();
  }

  async #setThinking(): Promise<void> {
    const handle = this.#handle;
    if (!handle) return;
    try {
      await handle.setThinkingLevel(this.#thinking.value as Parameters<SessionHandle["setThinkingLevel"]>[0]);
    } catch (error) {
      toast(`Could not set the thinking level: ${(error as Error).message}`, "error");
    }
    await this.load(handle);
    this.#changed();
  }
}
