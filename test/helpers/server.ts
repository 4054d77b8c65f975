import type { TestContext } from "node:test";
import { createPiServer, type PiServer, type PiServerOptions } from "../../src/index.js";
import { TestClient } from "./client.js";
import { type FauxFactoryOptions, type FauxSetup, fauxSetup } from "./faux.js";

/** A listening server plus clients that are closed, with the server, after the test. */
export interface Served {
  server: PiServer;
  url: string;
  /** Connect a client (closed after the test). */
  connect(): Promise<TestClient>;
}

export interface Harness extends FauxSetup, Served {}

/** Listen on port 0 and register teardown: clients, then the server, then `cleanup`. */
export async function serve(t: TestContext, server: PiServer, cleanup: () => Promise<void> | void): Promise<Served> {
  const address = await server.listen();
  const url = `ws://127.0.0.1:${address?.port}`;
  const clients: TestClient[] = [];
  t.after(async () => {
    await Promise.all(clients.map((c) => c.close()));
    await server.close();
    await cleanup();
  });
  return {
    server,
    url,
    connect: async () => {
      const client = await TestClient.connect(url);
      clients.push(client);
      return client;
    },
  };
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
    ...(options.logger ? {} : { logLevel: "silent" as const }),
    sessionFactory: setup.factory,
    cwd: setup.root,
    shutdownGraceMs: 0,
    ...options,
  });
  return { ...setup, ...(await serve(t, server, setup.cleanup)) };
}
