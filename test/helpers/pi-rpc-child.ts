/**
 * pi's own RPC mode (`runRpcMode`) on the parity script's faux model, settings and extension: JSONL commands on
 * stdin, responses and events on stdout; it exits when stdin ends. Prints nothing else to stdout (pi owns it).
 * argv: cwd (the session's working directory). Run with `node --import tsx`.
 */
import { runRpcMode } from "@earendil-works/pi-coding-agent";
import type { SessionRequest } from "../../src/index.js";
import { fauxSetup } from "./faux.js";
import { PARITY_FAUX, parityResponses } from "./parity-script.js";

const cwd = process.argv[2];
if (cwd === undefined) throw new Error("usage: pi-rpc-child.ts <cwd>");
const setup = fauxSetup(PARITY_FAUX);
process.on("exit", () => setup.cleanup());
setup.faux.setResponses(parityResponses());
// No server around it: pi's own bash operations (bashOperations undefined), unconfined file tools.
const request = { sessionId: "pi", owner: undefined, cwd, workspace: undefined } as unknown as SessionRequest;
await runRpcMode(await setup.factory(request));
