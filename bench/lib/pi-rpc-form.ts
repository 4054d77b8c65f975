/**
 * What pi 1.6's RPC mode writes for each session event: `serializeJsonLine(toJsonEvent(event))`, pi's own
 * `toJsonEvent` (pi-coding-agent's `modes/json-event.js`: a `message_update` without the cumulative `message` and
 * without `assistantMessageEvent.partial`, `usage` on top; every other event as it is). The function is not in pi's
 * exports map, so it is loaded by file from the installed package: the benches' baselines send exactly what pi
 * sends, not our re-implementation of it (src/server/update-forms.ts).
 */
import type { AgentSessionEvent, JsonAgentSessionEvent } from "@earendil-works/pi-coding-agent";

const entry = import.meta.resolve("@earendil-works/pi-coding-agent"); // …/dist/index.js
const jsonEvent = (await import(new URL("./modes/json-event.js", entry).href)) as {
  toJsonEvent(event: AgentSessionEvent): JsonAgentSessionEvent;
};

export const toJsonEvent = jsonEvent.toJsonEvent;

/** The `full` form of an event (pi's plus the cumulative `message` on a `message_update`), as pi-server builds it. */
export function toFullEvent(event: AgentSessionEvent): object {
  const json = toJsonEvent(event);
  return event.type === "message_update" ? { ...json, message: event.message } : json;
}

/** The wire form a bench client asks for: `pi` (pi-server's default, pi RPC's own) or `full` (the opt-in). */
export type Encoding = "pi" | "full";

export function encodingOf(value: string | undefined): Encoding {
  if (value === undefined || value === "" || value === "pi") return "pi";
  if (value === "full") return "full";
  throw new Error(`encoding must be "pi" (the default) or "full", not ${value}`);
}

/** The event in `encoding`'s form. */
export const formOf = (encoding: Encoding): ((event: AgentSessionEvent) => object) => (encoding === "full" ? toFullEvent : toJsonEvent);
