/** Something that receives a session's event frames: a connection, or a test double. */
export interface Subscriber {
  readonly connectionId: string;
  sendFrame(frame: string): void;
  /** The session is gone (deleted or the server is closing); forget the subscription. */
  detach(sessionId: string): void;
}

/**
 * One per session. Stamps each event with the session's next `seq` once, serializes it once, and hands the same
 * string to every subscriber, so all subscribers see identical frames (architecture.md, "an event, outbound").
 */
export class EventHub {
  readonly #subscribers = new Set<Subscriber>();
  /** `{"type":"event","sessionId":…,"seq":` — the part of every frame that never changes. */
  readonly #prefix: string;
  #seq = 0;

  constructor(sessionId: string) {
    this.#prefix = `{"type":"event","sessionId":${JSON.stringify(sessionId)},"seq":`;
  }

  /** The seq of the last event published (0 before the first). */
  get seq(): number {
    return this.#seq;
  }

  get subscriberCount(): number {
    return this.#subscribers.size;
  }

  subscribers(): IterableIterator<Subscriber> {
    return this.#subscribers.values();
  }

  has(subscriber: Subscriber): boolean {
    return this.#subscribers.has(subscriber);
  }

  add(subscriber: Subscriber): void {
    this.#subscribers.add(subscriber);
  }

  delete(subscriber: Subscriber): boolean {
    return this.#subscribers.delete(subscriber);
  }

  /** Number and deliver `event`; returns the frame, so callers can keep it (pending dialogs are re-sent by frame). */
  publish(event: object): string {
    this.#seq += 1;
    const frame = `${this.#prefix}${this.#seq},"event":${JSON.stringify(event)}}`;
    for (const subscriber of this.#subscribers) subscriber.sendFrame(frame);
    return frame;
  }

  /** Send a notice (not numbered) to every subscriber. */
  notify(notice: object): void {
    if (this.#subscribers.size === 0) return;
    const frame = JSON.stringify(notice);
    for (const subscriber of this.#subscribers) subscriber.sendFrame(frame);
  }
}
