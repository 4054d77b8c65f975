import { type Frame, frameText } from "../../src/server/wire-frame.js";

/** The seq of an event frame. */
export const seqOf = (frame: Frame) => (JSON.parse(frameText(frame)) as { seq: number }).seq;

/** A cluster's appends, settled by the test in any order (issue 27: append before delivery). */
export function appends() {
  const pending = new Map<number, (deliver: boolean) => void>();
  return {
    onPublished: (seq: number) => new Promise<boolean>((resolve) => pending.set(seq, resolve)),
    settle: async (seq: number, deliver = true) => {
      pending.get(seq)?.(deliver);
      pending.delete(seq);
      await Promise.resolve(); // the hub hears of it in a microtask
      await Promise.resolve();
    },
  };
}

/** A subscriber that records the seqs it is sent. */
export function seqRecorder(id = "c") {
  const seqs: number[] = [];
  return { seqs, subscriber: { connectionId: id, sendFrame: (frame: Frame) => seqs.push(seqOf(frame)), attached: () => undefined, detached: () => undefined } };
}
