/**
 * Red team (adr/0032): stream entries written by someone else with access to Redis. The promise: a replay it cannot
 * serve is undefined (the client resyncs), never a throw, and a crafted `d` entry cannot make the decoder allocate
 * far beyond what Redis holds.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { DeltaDecoder } from "../../src/cluster/stream-deltas.js";
import { sessionStream } from "../helpers/streams.js";

test("red team: a delta whose `r` is not a seq (negative, fractional) is a resync, not a Redis error thrown out of replay", async (t) => {
  const { streams, owner } = await sessionStream(t, "h", 1_000);
  for (const [name, r] of [["neg", -1], ["frac", 1.5]] as const) {
    const key = `pi:events:${name}`;
    assert.equal(await streams.append(key, owner, 1, { field: "f", value: '{"n":1}' }, "e1"), "appended");
    assert.equal(await streams.append(key, owner, 2, { field: "f", value: '{"n":2}' }, "e1"), "appended");
    const hostile = JSON.stringify({ b: 1, r, p: ["{", "}"], t: [["0", 0, "x"]] });
    assert.equal(await streams.append(key, owner, 3, { field: "d", value: hostile }, "e1"), "appended");
    // The entry cannot be decoded (its base is not there): the promise is a resync, not an exception.
    let outcome: unknown;
    try {
      outcome = await streams.replay(key, 2, "e1", 1_000);
    } catch (error) {
      outcome = `threw: ${(error as Error).message}`;
    }
    assert.equal(outcome, undefined, `r = ${r}`);
  }
});

test("red team: a 13 KB delta naming one 1 MiB body 513 times is malformed: nothing is built (it decoded into 538 MB, then threw ERR_STRING_TOO_LONG)", async (t) => {
  const { streams, owner, key } = await sessionStream(t, "amp", 1_000);
  const body = "y".repeat(1 << 20);
  assert.equal(await streams.append(key, owner, 1, { field: "d", value: JSON.stringify({ b: 0, r: 1, p: ["[", "]"], t: [["0", 0, body]] }) }, "e1"), "appended");
  const copies = 513;
  const hostile = JSON.stringify({ b: 1, r: 1, p: Array.from({ length: copies + 1 }, () => ""), t: Array.from({ length: copies }, () => ["0", 1 << 20, ""]) });
  assert.ok(hostile.length < 14_000, `${hostile.length} bytes`);
  assert.equal(await streams.append(key, owner, 2, { field: "d", value: hostile }, "e1"), "appended");
  // The decoder alone: how many bytes does one small entry become?
  const decoder = new DeltaDecoder();
  decoder.decode(1, "d", JSON.stringify({ b: 0, r: 1, p: ["[", "]"], t: [["0", 0, body]] }));
  let decoded: string | undefined | Error;
  try {
    decoded = decoder.decode(2, "d", hostile);
  } catch (error) {
    decoded = error as Error;
  }
  assert.ok(!(decoded instanceof Error), `the decoder threw: ${String(decoded)}`);
  assert.equal(decoded, undefined, "an entry naming one body many times is malformed");
  let outcome: unknown;
  try {
    outcome = await streams.replay(key, 1, "e1", 1_000);
  } catch (error) {
    outcome = `threw: ${(error as Error).message}`;
  }
  assert.equal(outcome, undefined);
});

test("red team: malformed deltas decode to nothing (non-integer or out-of-range numbers, one key twice, kept or spliced on a keyframe, a splice past its base)", () => {
  const keyframe = JSON.stringify({ b: 0, r: 1, p: ["[", "]"], t: [["0", 0, "abcdef"]] });
  const cases: Array<[string, string]> = [
    ["kept 2.5", JSON.stringify({ b: 1, r: 1, p: ["[", "]"], t: [["0", 2.5, "Z"]] })],
    ["a key that is not a string", JSON.stringify({ b: 1, r: 1, p: ["[", "]"], t: [[0.5, 0, "Z"]] })],
    ["one key twice", JSON.stringify({ b: 1, r: 1, p: ["[", ",", "]"], t: [["0", 6, ""], ["0", 6, ""]] })],
    ["kept on a keyframe", JSON.stringify({ b: 0, r: 2, p: ["[", "]"], t: [["0", 3, "Z"]] })],
    ["b at or above its own seq", JSON.stringify({ b: 2, r: 1, p: ["[", "]"], t: [["0", 3, "Z"]] })],
    ["a piece spliced on a keyframe", JSON.stringify({ b: 0, r: 2, p: [[1, 0, "x"], "]"], t: [["0", 0, "Z"]] })],
    ["a splice longer than its base", JSON.stringify({ b: 1, r: 1, p: [[1, 5, "x"], "]"], t: [["0", 6, ""]] })],
  ];
  const accepted: string[] = [];
  for (const [name, value] of cases) {
    const decoder = new DeltaDecoder();
    assert.equal(decoder.decode(1, "d", keyframe), "[abcdef]");
    // "b at or above its own seq": the decoder's last seq is 1; seq 2 naming b 2 is itself.
    const out = decoder.decode(2, "d", value);
    if (out !== undefined) accepted.push(`${name} -> ${out.slice(0, 40)}`);
  }
  assert.deepEqual(accepted, [], "malformed entries decode to frames the hub never stored");
});
