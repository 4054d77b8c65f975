import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

/** Debian's chromium (scripts/provision.sh installs it); CHROMIUM_PATH overrides. */
function chromiumPath(): string {
  const candidates = [process.env["CHROMIUM_PATH"], "/usr/lib/chromium/chromium", "/usr/bin/chromium"];
  const found = candidates.find((path) => path !== undefined && existsSync(path));
  if (!found) throw new Error("chromium is missing: run scripts/provision.sh (apt-get install chromium)");
  return found;
}

/** Headless Chromium, closed after the test. */
export async function launchChromium(t: { after(fn: () => Promise<void>): void }): Promise<Browser> {
  const browser = await chromium.launch({ executablePath: chromiumPath(), args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] });
  t.after(() => browser.close());
  return browser;
}
