/**
 * pi's own RPC mode (`runRpcMode`) around the same faux session as the other servers, in its own process: JSONL
 * commands on stdin, responses and events on stdout, a pipe to the bench (start it with `startRpcChild`). The
 * baseline for what pi itself costs to stream a reply to one reader, in pi 1.6's wire form (`toJsonEvent`). IPC:
 * { cmd: "reply", text } makes `text` the faux model's next reply (→ { set }); "cpu" and "exit" as server-process.
 */
import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import { runRpcMode } from "@earendil-works/pi-coding-agent";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fauxSetup } from "../../test/helpers/faux.js";

const setup = fauxSetup();
const cwd = join(setup.root, "work");
mkdirSync(cwd);
const runtime = await setup.factory({ cwd } as Parameters<typeof setup.factory>[0]);
process.on("message", (message: { cmd: string; text?: string }) => {
  if (message.cmd === "reply") {
    setup.faux.setResponses([fauxAssistantMessage(message.text as string)]);
    process.send?.({ set: true });
  } else if (message.cmd === "cpu") {
    process.send?.({ cpu: process.cpuUsage() });
  } else if (message.cmd === "exit") {
    setup.cleanup();
    process.exit(0);
  }
});
process.send?.({ port: 0 });
await runRpcMode(runtime);
