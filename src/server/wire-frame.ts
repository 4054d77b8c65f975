/**
 * A text frame's UTF-8 in consecutive parts that are sent without being joined (adr/0023): the growing text of a
 * streaming message is one part, shared by every frame of that message, so a frame costs its small rest, not a copy
 * of the whole text. Parts are never written to after the frame exists.
 */
export class PartedFrame {
  readonly parts: readonly Buffer[];
  /** Bytes in all parts. */
  readonly length: number;

  constructor(parts: readonly Buffer[]) {
    this.parts = parts;
    let length = 0;
    for (const part of parts) length += part.length;
    this.length = length;
  }

  /** The frame's UTF-8 in one Buffer (a copy; the slow paths only). */
  joined(): Buffer {
    return Buffer.concat(this.parts as Buffer[], this.length);
  }
}

/** A frame's UTF-8: whole, or in parts. */
export type FrameBytes = Buffer | PartedFrame;

/** A text frame as a socket takes it: a string, or its UTF-8 encoded once for many subscribers (adr/0014). */
export type TextFrame = string | Buffer;

/** A text frame as the server holds it: whole, or its UTF-8 in parts. */
export type Frame = TextFrame | PartedFrame;

/** A frame as text (the slow paths: conflation markers, merges, the cluster's stream). */
export function frameText(frame: Frame): string {
  if (typeof frame === "string") return frame;
  return (frame instanceof PartedFrame ? frame.joined() : frame).toString("utf8");
}
