/**
 * Noticing that the process that started the server is gone (issue 29). `npx pi-server` runs the server as npx's
 * grandchild (npx → sh → node); SIGTERM to npx ends npx and its shell but not node, which is re-parented (to PID 1 or
 * a subreaper) and would keep the port. Node has no `prctl(PR_SET_PDEATHSIG)`, and the server's stdio is inherited
 * from whatever ran npx, so nothing closes when npx dies: the parent's pid is polled instead (a `getppid()` each time).
 *
 * Only a change counts. A server whose parent is PID 1 from the start (Docker with tini, systemd, `unshare --fork`)
 * is watched like any other and never called gone; a parent that exited before the watch began (while pi loaded)
 * is noticed at the first check, since the pid to compare with is taken at start.
 */

/** How often the parent is checked: well inside the default 10 s shutdown grace, and one cheap syscall each. */
export const PARENT_CHECK_MS = 1_000;

export interface ParentWatchOptions {
  /** The parent's pid when the process started (`process.ppid` then). */
  readonly parentAtStart: number;
  /** Called once, when the parent differs from `parentAtStart`; the watch has stopped. */
  readonly onGone: (parentAtStart: number, ppidNow: number) => void;
  /** Called at each check that finds the parent unchanged (the CLI logs it at trace level). */
  readonly onCheck?: (ppid: number) => void;
  /** @default PARENT_CHECK_MS */
  readonly intervalMs?: number;
  /** The current parent's pid. @default () => process.ppid */
  readonly ppid?: () => number;
}

/** Watch the parent until it changes (or the returned stop is called); the timer never keeps the process alive. */
export function watchParent(options: ParentWatchOptions): () => void {
  const current = options.ppid ?? (() => process.ppid);
  const check = () => {
    const now = current();
    if (now === options.parentAtStart) {
      options.onCheck?.(now);
      return;
    }
    clearInterval(timer);
    options.onGone(options.parentAtStart, now);
  };
  const timer = setInterval(check, options.intervalMs ?? PARENT_CHECK_MS);
  timer.unref();
  check();
  return () => clearInterval(timer);
}
