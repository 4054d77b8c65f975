import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { WAIT_MS } from "./wait.js";

/** Where screenshots go (git-ignored); PI_SERVER_ARTIFACTS overrides. */
export const ARTIFACTS = process.env["PI_SERVER_ARTIFACTS"] ?? join(import.meta.dirname, "../../.artifacts");

export { WAIT_MS };

/** A screenshot in `.artifacts/console-<name>.png`. */
export async function shot(page: Page, name: string): Promise<string> {
  mkdirSync(ARTIFACTS, { recursive: true });
  const path = join(ARTIFACTS, `console-${name}.png`);
  await page.screenshot({ path });
  return path;
}

/**
 * A browser context whose pages count the WebSockets they open (`window.__sockets`), with Playwright's clock
 * installed: time flows as usual until a test moves it on with `page.clock.runFor`.
 */
export async function countingContext(browser: Browser, width = 1280, height = 800): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width, height } });
  await context.clock.install();
  // A string, not a function: tsx would wrap it in a helper the page does not have.
  await context.addInitScript(`{
    const Native = window.WebSocket;
    window.__sockets = 0;
    window.WebSocket = class extends Native {
      constructor(url, protocols) {
        super(url, protocols);
        window.__sockets += 1;
      }
    };
  }`);
  return context;
}

/** WebSockets the page opened so far (see `countingContext`). */
export function socketsOpened(page: Page): Promise<number> {
  return page.evaluate("window.__sockets") as Promise<number>;
}

/** Type the token into the auth form the page shows, as a person would, and wait until it is connected. */
export async function signIn(page: Page, token: string): Promise<void> {
  await page.waitForSelector("#auth:not([hidden])", { timeout: WAIT_MS });
  await page.fill("#token", token);
  await page.click("#auth-form button[type=submit]");
  await page.waitForSelector("#status.connected", { timeout: WAIT_MS });
}

/**
 * What falls off the screen: the document wider than the viewport, or any visible element reaching past its left or
 * right edge (a clipped or scrolled part inside a scroll container does not count: it is reachable).
 */
export function offScreen(page: Page): Promise<string[]> {
  // A string, not a function: tsx would wrap the inner functions in a helper the page does not have.
  return page.evaluate(OFF_SCREEN) as Promise<string[]>;
}

const OFF_SCREEN = `(() => {
  const width = document.documentElement.clientWidth;
  const problems = [];
  if (document.documentElement.scrollWidth > width) problems.push("document scrollWidth " + document.documentElement.scrollWidth + " > " + width);
  if (document.body.scrollWidth > document.body.clientWidth) problems.push("body scrollWidth " + document.body.scrollWidth + " > " + document.body.clientWidth);
  const name = (node) => node.tagName.toLowerCase() + (node.id ? "#" + node.id : "") + (typeof node.className === "string" && node.className ? "." + node.className.split(" ").join(".") : "");
  const clipped = (node) => {
    for (let parent = node.parentElement; parent && parent !== document.body; parent = parent.parentElement) {
      if (getComputedStyle(parent).overflowX !== "visible") return true;
    }
    return false;
  };
  for (const node of document.body.querySelectorAll("*")) {
    const box = node.getBoundingClientRect();
    if (box.width === 0 || box.height === 0 || getComputedStyle(node).visibility === "hidden") continue;
    if ((box.right > width + 0.5 || box.left < -0.5) && !clipped(node)) problems.push(name(node) + " spans " + Math.round(box.left) + ".." + Math.round(box.right) + " of " + width);
  }
  // Every container holds its content across (a horizontal scrollbar would hide text off to the side), except a
  // line cut on purpose with an ellipsis and the code blocks, text areas and menus that scroll by design.
  for (const node of document.body.querySelectorAll("*")) {
    if (node.clientWidth === 0 || node.scrollWidth <= node.clientWidth + 1 || ["PRE", "TEXTAREA", "SELECT"].includes(node.tagName)) continue;
    const style = getComputedStyle(node);
    if (style.overflowX === "hidden" && style.textOverflow === "ellipsis") continue;
    problems.push(name(node) + " scrollWidth " + node.scrollWidth + " > clientWidth " + node.clientWidth);
  }
  return problems;
})()`;

/** Every frame the page's WebSockets receive, parsed, from now on; `waitFor` finds one (also one already seen). */
export function recordFrames(page: Page): { waitFor(predicate: (frame: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>> } {
  const frames: Array<Record<string, unknown>> = [];
  const waiters = new Set<{ predicate: (frame: Record<string, unknown>) => boolean; resolve: (frame: Record<string, unknown>) => void }>();
  page.on("websocket", (ws) => {
    ws.on("framereceived", ({ payload }) => {
      const frame = JSON.parse(String(payload)) as Record<string, unknown>;
      frames.push(frame);
      for (const waiter of waiters) {
        if (!waiter.predicate(frame)) continue;
        waiters.delete(waiter);
        waiter.resolve(frame);
      }
    });
  });
  return {
    waitFor: (predicate, timeoutMs = WAIT_MS) => {
      const seen = frames.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error("no such frame"));
        }, timeoutMs);
        const waiter = {
          predicate,
          resolve: (frame: Record<string, unknown>) => {
            clearTimeout(timer);
            resolve(frame);
          },
        };
        waiters.add(waiter);
      });
    },
  };
}

/** Type into the composer and press Enter. */
export async function say(page: Page, text: string): Promise<void> {
  await page.fill("#input", text);
  await page.press("#input", "Enter");
}
