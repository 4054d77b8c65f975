import type { TestContext } from "node:test";
import { createPiServer, type PiServer, type PiServerOptions } from "../../src/index.js";
import { TestClient } from "./client.js";
import { type FauxFactoryOptions, type FauxSetup, fauxSetup } from "./faux.js";

export interface Harness extends FauxSetup {
  server: PiServer;
  url: string;
  /** Connect a client (closed after the test). */
  connect(): Promise<TestClient>;
}

/** A real server on an ephemeral port with faux-backed sessions; everything is torn down after the test. */
export async function startServer(
  t: TestContext,
  options: Partial<PiServerOptions> = {},
  fauxOptions: FauxFactoryOptions = {},
): Promise<Harness> {
  const setup = fauxSetup(fauxOptions);
  const server = createPiServer({
    port: 0,
    logLevel: "silent",
    sessionFactory: setup.factory,
    cwd: setup.root,
    shutdownGraceMs: 0,
    ...options,
  });
  const address = await server.listen();
  const url = `ws://127.0.0.1:${address?.port}`;
  const clients: TestClient[] = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
    setup.cleanup();
  });
  return {
    ...setup,
    server,
    url,
    connect: async () => {
      const client = await TestClient.connect(url);
      clients.push(client);
      return client;
    },
  };
}
