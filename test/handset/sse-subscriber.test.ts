import { describe, expect, it } from "vitest";
import { utf8 } from "../../src/core/codec/bytes.ts";
import { HandsafeError } from "../../src/core/errors.ts";
import {
  type SseResponse,
  SseSubscriber,
  type SseSubscriberEvent,
} from "../../src/handset/sse-subscriber.ts";
import { until } from "../helpers/wait.ts";

async function* chunks(...parts: string[]): AsyncGenerator<Uint8Array> {
  for (const p of parts) yield utf8(p);
}

const stream = (...events: string[]): SseResponse => ({
  status: 200,
  headers: { "content-type": "text/event-stream" },
  body: chunks(...events),
});
const answer = (status: number, body: string, type = "text/plain"): SseResponse => ({
  status,
  headers: { "content-type": type },
  body: chunks(body),
});

/** A subscriber over scripted answers (the last one repeats), collecting what it reports. */
function scripted(answers: SseResponse[]) {
  const events: SseSubscriberEvent[] = [];
  const seen: string[] = [];
  let n = 0;
  const sub = new SseSubscriber({
    open: async () => answers[Math.min(n++, answers.length - 1)]!,
    contentType: "text/event-stream",
    codes: { malformed: "test.malformed", refused: "test.refused", closed: "test.closed" },
    describe: "GET /events",
    ready: (e) => {
      if (e.event !== "ready") throw new HandsafeError("test.malformed", "no ready", { status: 0 });
      return {};
    },
    event: (e) => void seen.push(e.data),
    onEvent: (e) => events.push(e),
    minRetryMs: 1,
    maxRetryMs: 4,
    jitter: [0.5, 1],
  });
  return { sub, events, seen, opened: () => n };
}

describe("the handset's push stream loop", () => {
  it("hands on the events after ready, and reopens a stream that ended (no error) or broke the protocol", async () => {
    const { sub, events, seen } = scripted([
      stream("event: ready\ndata: {}\n\n", "data: one\n\n"),
      stream("data: not ready\n\n"),
      stream("event: ready\ndata: {}\n\n", "data: two\n\n"),
      answer(401, "no"),
    ]);
    sub.start();
    await until(() => sub.state === "stopped");
    expect(seen).toEqual(["one", "two"]);
    expect(
      events.map((e) => (e.kind === "connected" ? e.kind : `${e.kind} ${e.error?.code ?? "-"}`)),
    ).toEqual([
      "connected",
      "disconnected -",
      "disconnected test.malformed",
      "connected",
      "disconnected -",
      "stopped test.refused",
    ]);
    const stopped = events.at(-1) as { error: HandsafeError };
    expect(stopped.error).toMatchObject({ status: 401, message: "GET /events answered HTTP 401" });
    await expect(sub.connected()).rejects.toMatchObject({ code: "test.refused" });
  });

  it("retries 408, 429 and 5xx, takes a refusal's code from its JSON body, and stops on other 4xx", async () => {
    const json = (status: number, code: string) =>
      answer(status, JSON.stringify({ error: { code, message: "m" } }), "application/json");
    const { sub, events } = scripted([
      json(429, "rate.limited"),
      json(408, "t"),
      json(503, "u"),
      json(403, "forbidden"),
    ]);
    const refused = sub.start().connected();
    await expect(refused).rejects.toMatchObject({ code: "forbidden", status: 403 });
    expect(events.map((e) => e.kind)).toEqual(["disconnected", "disconnected", "disconnected", "stopped"]);
    expect(sub.state).toBe("stopped");
  });

  it("a wrong media type is a malformed stream, retried; close() ends the loop and rejects connected()", async () => {
    const { sub, events, opened } = scripted([answer(200, "{}", "application/json")]);
    sub.start();
    await until(() => opened() >= 3);
    expect(events[0]).toMatchObject({ kind: "disconnected", error: { code: "test.malformed" } });
    const waiting = sub.connected();
    await sub.close();
    await expect(waiting).rejects.toMatchObject({ code: "test.closed" });
    await expect(sub.connected()).rejects.toMatchObject({ code: "test.closed" });
    expect(sub.state).toBe("closed");
  });
});
