import { describe, expect, it } from "vitest";
import { formatLogLine } from "./log-format.js";

describe("formatLogLine", () => {
  it("turns a pino line into time, level, message and fields", () => {
    const time = new Date(2026, 10, 23, 19, 18, 24).getTime();
    const line = JSON.stringify({ level: 30, time, pid: 1, hostname: "vm", component: "agents", job: "j1", msg: "submitting task", image: "busybox:1" });
    expect(formatLogLine(line)).toBe("19:18:24 INFO  submitting task component=agents job=j1 image=busybox:1");
  });

  it("quotes values with spaces and shows an error by its message", () => {
    const line = JSON.stringify({ level: 50, time: 0, msg: "reconcile failed", err: { type: "Error", message: "no such job", stack: "…" }, kind: "job id" });
    expect(formatLogLine(line)).toMatch(/^\d\d:\d\d:\d\d ERROR reconcile failed err="no such job" kind="job id"$/);
  });

  it("passes lines that are not pino JSON through", () => {
    expect(formatLogLine("plain text")).toBe("plain text");
    expect(formatLogLine('{"no":"level"}')).toBe('{"no":"level"}');
  });
});
