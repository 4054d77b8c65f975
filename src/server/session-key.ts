/** Registry key: session ids are scoped by owner, so one principal's ids tell nothing about another's (adr/0011). */
export function keyOf(owner: string | undefined, sessionId: string): string {
  // "-" marks unowned, "+" an owner, so no principal id (not even "") can collide with the unowned namespace.
  return owner === undefined ? `-\n${sessionId}` : `+${owner}\n${sessionId}`;
}
