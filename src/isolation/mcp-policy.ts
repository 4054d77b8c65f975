/**
 * Which servers of the operator's `mcp.json` a session gets (adr/0024). No pi import: the options and the CLI use
 * it before pi is loaded.
 */

/** All of them, none, or the ones named. */
export type McpServerPolicy = "all" | "none" | readonly string[];

/** pi's rule for server names (letters, digits, `_`, `-`), which an allow-list is checked against. */
export const MCP_SERVER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** An allow-list names servers exactly: `a-b` does not let `a_b` in, though pi counts them as one namespace. */
export function policyAllows(policy: McpServerPolicy, name: string): boolean {
  if (policy === "all") return true;
  if (policy === "none") return false;
  return policy.includes(name);
}

/** A policy from an untrusted source (an option, the CLI, a hook's answer): undefined when it is not one. */
export function parsePolicy(value: unknown): McpServerPolicy | undefined {
  if (value === "all" || value === "none") return value;
  if (!Array.isArray(value) || value.some((name) => typeof name !== "string" || !MCP_SERVER_NAME.test(name))) return undefined;
  return Object.freeze([...(value as string[])]);
}
