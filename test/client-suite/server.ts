import { fauxAssistantMessage } from "@earendil-works/pi-ai";
import type { ExtensionFactory } from "@earendil-works/pi-coding-agent";
import { createPiServer, tokenAuth } from "../../src/index.js";
import { fauxSetup } from "../helpers/faux.js";
import { tcpProxy } from "../helpers/proxy.js";
import type { SuiteEnv } from "./scenarios.js";

export const SUITE_TOKEN = "suite-token-0123456789abcdef";

/** A command that opens a dialog and reports the answer (the dialog scenario). */
const askExtension: ExtensionFactory = (pi) => {
  pi.registerCommand("pick", {
    description: "select, then report",
    handler: async (_args, ctx) => {
      const choice = await ctx.ui.select("Pick one", ["red", "green"]);
      ctx.ui.notify(`picked:${choice}`, "info");
    },
  });
};

/**
 * The server the shared client suite talks to (Node side, for both runners): real sessions on the faux model,
 * token auth, the dialog extension, behind a proxy the scenarios can cut.
 */
export async function startSuiteServer(): Promise<{ env: Omit<SuiteEnv, "WebSocketImpl" | "tokenTransport" | "tellsConnectCauses">; stop(): Promise<void> }> {
  const setup = fauxSetup({ extensionFactories: [askExtension], tokensPerSecond: 400 });
  const server = createPiServer({
    port: 0,
    logLevel: "silent",
    sessionFactory: setup.factory,
    cwd: setup.root,
    shutdownGraceMs: 0,
    dialogTimeoutMs: 60_000,
    auth: tokenAuth({ tokens: [{ principal: "suite", token: SUITE_TOKEN }] }),
  });
  const address = await server.listen();
  const proxy = await tcpProxy(`ws://127.0.0.1:${address?.port}`);
  return {
    env: {
      url: proxy.url,
      token: SUITE_TOKEN,
      reply: async (texts) => setup.faux.setResponses(texts.map((text) => fauxAssistantMessage(text))),
      cut: () => proxy.cut(),
    },
    stop: async () => {
      await proxy.close();
      await server.close();
      setup.cleanup();
    },
  };
}
