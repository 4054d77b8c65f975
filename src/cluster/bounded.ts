/**
 * Wait for `work`, but no longer than `ms`: for clean-up writes on the way out (releasing leases, deleting streams)
 * that must not hold a shutdown hostage while Redis is unreachable. What they would have removed expires there.
 */
export async function atMost(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work.then(
      () => undefined,
      () => undefined,
    ),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      timer.unref();
    }),
  ]);
  clearTimeout(timer);
}
