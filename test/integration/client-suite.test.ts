import { after, before, test } from "node:test";
import WebSocket from "ws";
import type { WebSocketConstructor } from "../../src/client/index.js";
import { Clients, scenarios, type SuiteEnv } from "../client-suite/scenarios.js";
import { startSuiteServer } from "../client-suite/server.js";

// The shared client suite on Node, against `ws` (the browser runs the same scenarios: test/browser/).
let env: SuiteEnv;
let stop: () => Promise<void>;

before(async () => {
  const suite = await startSuiteServer();
  stop = suite.stop;
  env = { ...suite.env, WebSocketImpl: WebSocket as unknown as WebSocketConstructor, tokenTransport: "header", tellsConnectCauses: true };
});
after(() => stop());

for (const scenario of scenarios) {
  test(scenario.name, async () => {
    const clients = new Clients();
    try {
      await scenario.run(env, clients);
    } finally {
      clients.closeAll();
    }
  });
}
