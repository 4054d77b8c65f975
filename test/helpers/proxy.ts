import { type AddressInfo, connect, createServer, type Socket } from "node:net";

/**
 * A TCP proxy in front of a WebSocket server (or Redis): `freeze()` stops everything in flight both ways without
 * closing anything (a half-open path), `cut()` resets every connection (the client sees 1006). New connections pass.
 * `delayMs` holds every chunk that long each way (a slow network: a round trip costs twice that).
 */
export async function tcpProxy(target: string, options: { delayMs?: number } = {}) {
  const { hostname, port } = new URL(target);
  const pairs = new Set<[Socket, Socket]>();
  // With a delay, each chunk goes on `delayMs` after it came (in order: equal timeouts fire in creation order).
  const forward = (from: Socket, to: Socket) => {
    if (!options.delayMs) {
      from.pipe(to);
      return;
    }
    from.on("data", (chunk: Buffer) => {
      setTimeout(() => {
        if (!to.destroyed) to.write(chunk);
      }, options.delayMs);
    });
  };
  const server = createServer((downstream) => {
    const upstream = connect(Number(port), hostname);
    const pair: [Socket, Socket] = [downstream, upstream];
    pairs.add(pair);
    forward(downstream, upstream);
    forward(upstream, downstream);
    const end = () => {
      pairs.delete(pair);
      downstream.destroy();
      upstream.destroy();
    };
    downstream.on("error", end).on("close", end);
    upstream.on("error", end).on("close", end);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    port: (server.address() as AddressInfo).port,
    freeze: () => {
      for (const [downstream, upstream] of pairs) {
        downstream.unpipe(upstream);
        upstream.unpipe(downstream);
        downstream.pause();
        upstream.pause();
      }
    },
    cut: async () => {
      for (const [downstream, upstream] of [...pairs]) {
        downstream.resetAndDestroy();
        upstream.destroy();
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const pair of pairs) for (const socket of pair) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
