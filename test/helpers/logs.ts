import { Writable } from "node:stream";
import pino from "pino";

/** A logger at trace level whose every line is kept, for tests that read what the server logged. */
export function captureLogs(): { logger: pino.Logger; text: () => string } {
  let text = "";
  const sink = new Writable({
    write(chunk, _encoding, done) {
      text += chunk.toString();
      done();
    },
  });
  return { logger: pino({ level: "trace" }, sink), text: () => text };
}
