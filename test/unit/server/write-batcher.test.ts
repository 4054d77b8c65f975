import assert from "node:assert/strict";
import { test } from "node:test";
import { setImmediate as turn } from "node:timers/promises";
import { WriteBatcher } from "../../../src/server/write-batcher.js";

/** A socket that records what the batcher did to it, and how deep it is corked. */
function fakeSocket() {
  const calls: string[] = [];
  let depth = 0;
  return {
    calls,
    get corked() {
      return depth > 0;
    },
    cork: () => {
      depth += 1;
      calls.push("cork");
    },
    uncork: () => {
      depth -= 1;
      calls.push("uncork");
    },
  };
}

test("the first frame of a turn is written at once; the rest of the burst is corked until the turn ends", async () => {
  const batcher = new WriteBatcher();
  const socket = fakeSocket();
  const batch = batcher.add(socket);
  batch.wrote(100);
  assert.equal(socket.corked, false, "a lone frame is never held");
  batch.wrote(100);
  batch.wrote(100);
  assert.equal(socket.corked, true);
  assert.deepEqual(socket.calls, ["cork"]);
  await turn();
  assert.equal(socket.corked, false, "uncorked when the turn ended");
  // A new turn: again the first frame goes out at once.
  batch.wrote(100);
  assert.equal(socket.corked, false);
  await turn();
  assert.deepEqual(socket.calls, ["cork", "uncork"]);
});

test("a burst goes out every 64 KiB, so corking never holds more than that plus a frame", async () => {
  const batcher = new WriteBatcher();
  const socket = fakeSocket();
  const batch = batcher.add(socket);
  batch.wrote(10);
  for (let i = 0; i < 20; i++) batch.wrote(16 * 1024); // 320 KiB after the first frame
  // Corked at the 2nd frame; every 4 frames of 16 KiB (64 KiB) it is released and corked again.
  assert.deepEqual(socket.calls.filter((c) => c === "uncork").length, 4);
  assert.equal(socket.corked, true);
  await turn();
  assert.equal(socket.corked, false);
});

test("one turn's end releases every socket that burst, and leaves the others alone", async () => {
  const batcher = new WriteBatcher();
  const [bursting, single, idle] = [fakeSocket(), fakeSocket(), fakeSocket()];
  const a = batcher.add(bursting);
  const b = batcher.add(single);
  batcher.add(idle);
  a.wrote(1);
  a.wrote(1);
  b.wrote(1);
  await turn();
  assert.deepEqual(bursting.calls, ["cork", "uncork"]);
  assert.deepEqual(single.calls, []);
  assert.deepEqual(idle.calls, []);
});
