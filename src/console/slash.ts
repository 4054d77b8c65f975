/**
 * Slash suggestions (issue 29): typing `/` in the composer lists the session's own commands from `get_commands` —
 * prompt templates, skills (`/skill:name`) and extension commands. Tab or a click inserts the highlighted one;
 * ↑/↓ move; Escape closes. Enter still sends what is typed.
 */
import type { SessionHandle } from "../client/index.js";
import { $, el } from "./dom.js";

type Command = Awaited<ReturnType<SessionHandle["getCommands"]>>[number];

/** Suggestions shown at once, at most. */
const SHOWN = 12;

export class SlashSuggestions {
  readonly #box = $("suggestions");
  readonly #input = $<HTMLTextAreaElement>("input");
  #commands: Command[] = [];
  #matches: Command[] = [];
  #active = 0;

  constructor() {
    this.#input.addEventListener("input", () => this.update());
    this.#input.addEventListener("keydown", (event) => this.#key(event), { capture: true });
    // A suggestion keeps the focus in the composer (mousedown), so a blur means the person went elsewhere.
    this.#input.addEventListener("blur", () => this.hide());
  }

  set(commands: Command[]): void {
    this.#commands = [...commands].sort((a, b) => a.name.localeCompare(b.name));
    this.update();
  }

  hide(): void {
    this.#box.hidden = true;
    this.#matches = [];
  }

  update(): void {
    const value = this.#input.value;
    if (!value.startsWith("/") || /\s/.test(value)) {
      this.hide();
      return;
    }
    const typed = value.slice(1).toLowerCase();
    this.#matches = this.#commands.filter((command) => command.name.toLowerCase().startsWith(typed)).slice(0, SHOWN);
    this.#active = 0;
    this.#render(typed);
  }

  #render(typed: string): void {
    this.#box.hidden = false;
    if (this.#matches.length === 0) {
      const why = this.#commands.length === 0
        ? "This session has no commands. Prompt templates (<agent dir>/prompts/*.md), skills and extension commands appear here."
        : `No command starts with /${typed}.`;
      this.#box.replaceChildren(el("div", "none", why));
      return;
    }
    this.#box.replaceChildren(
      ...this.#matches.map((command, index) => {
        const item = el("button", index === this.#active ? "active" : "");
        item.type = "button";
        item.dataset["command"] = command.name;
        item.append(el("span", "command", `/${command.name}`), el("span", `source ${command.source}`, command.source));
        if (command.description) item.append(el("span", "description", command.description));
        item.addEventListener("mousedown", (event) => event.preventDefault()); // keep the focus in the composer
        item.addEventListener("click", () => this.#insert(command));
        return item;
      }),
    );
  }

  #key(event: KeyboardEvent): void {
    if (this.#box.hidden || this.#matches.length === 0) {
      if (event.key === "Escape") this.hide();
      return;
    }
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      this.#active = (this.#active + step + this.#matches.length) % this.#matches.length;
      this.#render("");
    } else if (event.key === "Tab") {
      event.preventDefault();
      const command = this.#matches[this.#active];
      if (command) this.#insert(command);
    } else if (event.key === "Escape") {
      this.hide();
    }
  }

  #insert(command: Command): void {
    this.#input.value = `/${command.name} `;
    this.hide();
    this.#input.focus();
    this.#input.setSelectionRange(this.#input.value.length, this.#input.value.length);
  }
}
