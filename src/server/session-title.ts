/** The longest title `list_sessions` gives (characters): a label for a list, not the prompt itself. */
export const MAX_TITLE_LENGTH = 80;
/** Words of the first prompt a title keeps. */
const TITLE_WORDS = 8;
/** Only the start of a prompt is looked at: a 1 MiB first prompt costs no more than a short one. */
const LOOK_AT = 400;

/**
 * A session's title (issue 29): its name if one was set (`set_session_name`), else the first words of its first
 * prompt; undefined when it has neither. Control and bidirectional-override characters are dropped and whitespace is
 * collapsed, so a title is one plain line of at most `MAX_TITLE_LENGTH` characters.
 */
export function sessionTitle(name: string | undefined, messages: readonly unknown[]): string | undefined {
  const named = name === undefined ? "" : clean(name);
  if (named) return cut(named);
  const words = clean(firstPromptText(messages)).split(" ").filter(Boolean);
  if (words.length === 0) return undefined;
  const title = cut(words.slice(0, TITLE_WORDS).join(" "));
  return words.length > TITLE_WORDS && !title.endsWith("…") ? `${title}…` : title;
}

/** The text of the first user message that has any (its text blocks, joined), at most `LOOK_AT` characters of it. */
function firstPromptText(messages: readonly unknown[]): string {
  for (const message of messages) {
    const { role, content } = (message ?? {}) as { role?: unknown; content?: unknown };
    if (role !== "user") continue;
    const text =
      typeof content === "string"
        ? content
        : Array.isArray(content)
          ? content
              .map((block: unknown) => ((block as { type?: unknown })?.type === "text" ? String((block as { text?: unknown }).text ?? "") : ""))
              .join(" ")
          : "";
    if (text.trim()) return text.slice(0, LOOK_AT);
  }
  return "";
}

// C0/C1 controls (newlines and tabs become spaces first) and the bidirectional embedding/override/isolate marks.
// eslint-disable-next-line no-control-regex
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

function clean(text: string): string {
  return text.replace(/\s+/g, " ").replace(UNPRINTABLE, "").trim();
}

function cut(text: string): string {
  const chars = [...text]; // by code point: never half a surrogate pair
  return chars.length <= MAX_TITLE_LENGTH ? text : `${chars.slice(0, MAX_TITLE_LENGTH - 1).join("").trimEnd()}…`;
}
