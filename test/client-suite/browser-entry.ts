/**
 * The shared client suite as a page script (bundled to one ESM file by test/browser/client-suite.test.ts): runs every
 * scenario against the browser's own WebSocket and lists the results on the page for the screenshot.
 */
import type { WebSocketConstructor } from "../../src/client/index.js";
import { runScenarios, type ScenarioResult, type SuiteEnv } from "./scenarios.js";

/** The little of the DOM this page uses (the project's type check has no DOM lib). */
interface Element {
  textContent: string | null;
  className: string;
  append(...nodes: Element[]): void;
}
interface Page {
  WebSocket: WebSocketConstructor;
  document: { getElementById(id: string): Element | null; createElement(tag: string): Element; title: string };
  runSuite?: (config: { url: string; token: string }) => Promise<ScenarioResult[]>;
  /** Exposed by the harness (playwright's exposeFunction). */
  piSuiteReply(texts: string[]): Promise<void>;
  piSuiteCut(): Promise<void>;
}

const page = globalThis as unknown as Page;

page.runSuite = async ({ url, token }) => {
  const env: SuiteEnv = {
    url,
    token,
    WebSocketImpl: page.WebSocket,
    tokenTransport: "subprotocol",
    tellsConnectCauses: false,
    reply: (texts) => page.piSuiteReply(texts),
    cut: () => page.piSuiteCut(),
  };
  const list = page.document.getElementById("results") as Element;
  const results = await runScenarios(env, (result) => {
    const item = page.document.createElement("li");
    item.className = result.ok ? "ok" : "fail";
    item.textContent = `${result.ok ? "✔" : "✘"} ${result.name} — ${result.ms} ms`;
    if (result.error) {
      const detail = page.document.createElement("pre");
      detail.textContent = result.error;
      item.append(detail);
    }
    list.append(item);
  });
  const summary = page.document.getElementById("summary") as Element;
  const passed = results.filter((r) => r.ok).length;
  summary.textContent = `${passed} of ${results.length} passed in ${navigatorName()}`;
  summary.className = passed === results.length ? "ok" : "fail";
  return results;
};

function navigatorName(): string {
  return (globalThis as { navigator?: { userAgent?: string } }).navigator?.userAgent ?? "a browser";
}
