import { RunStatus } from "@dstack/proto/api";
import { describe, expect, it } from "vitest";
import { FINISHED_SHOWN, cleanLogLine, handleKey, initialState, logWindow, reduce, selectedRun, visibleRuns, windowAround, type UiState } from "./state.js";
import { fakeRun } from "./testing/fake-client.js";

const loaded = (...runs: ReturnType<typeof fakeRun>[]): UiState => reduce(initialState(), { type: "runs-snapshot", runs });
const names = (s: UiState) => visibleRuns(s).map((r) => r.runSpec?.runName);

describe("dstack ui state", () => {
  it("shows active runs and the newest finished ones, newest first; `a` shows all", () => {
    const finished = Array.from({ length: FINISHED_SHOWN + 3 }, (_, i) => fakeRun(`old-${i}`, RunStatus.DONE, 100 + i));
    let s = loaded(fakeRun("b", RunStatus.RUNNING, 5), fakeRun("a", RunStatus.SUBMITTED, 1), ...finished);
    expect(names(s).slice(0, 3)).toEqual(["a", "b", "old-0"]);
    expect(visibleRuns(s)).toHaveLength(2 + FINISHED_SHOWN);
    expect(s.selected).toBe("id-a");
    s = handleKey(s, "a", {}).state;
    expect(visibleRuns(s)).toHaveLength(2 + FINISHED_SHOWN + 3);
  });

  it("applies watch updates: new runs, changes, deletions; the selection stays on a shown run", () => {
    let s = loaded(fakeRun("a", RunStatus.RUNNING, 2));
    s = reduce(s, { type: "run-update", run: fakeRun("b", RunStatus.SUBMITTED, 1) });
    expect(names(s)).toEqual(["b", "a"]);
    expect(s.selected).toBe("id-a");
    s = reduce(s, { type: "run-update", run: fakeRun("a", RunStatus.TERMINATED, 2) });
    expect(selectedRun(s)?.status).toBe(RunStatus.TERMINATED);
    s = reduce(s, { type: "run-update", run: fakeRun("a", RunStatus.TERMINATED, 2, { deleted: true }) });
    expect(names(s)).toEqual(["b"]);
    expect(s.selected).toBe("id-b");
  });

  it("moves the selection with arrows and j/k, clamped at both ends", () => {
    let s = loaded(fakeRun("a", RunStatus.RUNNING, 1), fakeRun("b", RunStatus.RUNNING, 2), fakeRun("c", RunStatus.RUNNING, 3));
    s = handleKey(s, "", { downArrow: true }).state;
    expect(s.selected).toBe("id-b");
    s = handleKey(s, "j", {}).state;
    s = handleKey(s, "j", {}).state;
    expect(s.selected).toBe("id-c");
    s = handleKey(s, "k", {}).state;
    s = handleKey(s, "", { upArrow: true }).state;
    s = handleKey(s, "", { upArrow: true }).state;
    expect(s.selected).toBe("id-a");
    expect(handleKey(s, "G", {}).state.selected).toBe("id-c");
  });

  it("Enter opens the selected run's logs and follows them; Esc goes back and stops following", () => {
    let s = loaded(fakeRun("a", RunStatus.RUNNING, 1), fakeRun("b", RunStatus.RUNNING, 2));
    s = handleKey(s, "", { downArrow: true }).state;
    const open = handleKey(s, "", { return: true });
    expect(open.state.view).toBe("logs");
    expect(open.state.logs?.run).toBe("b");
    expect(open.effects).toEqual([{ type: "follow-logs", run: "b" }]);
    const back = handleKey(open.state, "", { escape: true });
    expect(back.state.view).toBe("runs");
    expect(back.state.logs).toBeUndefined();
    expect(back.effects).toEqual([{ type: "unfollow-logs" }]);
    expect(handleKey(open.state, "", { leftArrow: true }).state.view).toBe("runs");
  });

  it("s and x ask first; y stops or aborts, anything else cancels; finished runs are not asked about", () => {
    const s = loaded(fakeRun("a", RunStatus.RUNNING, 1), fakeRun("done", RunStatus.DONE, 2));
    const ask = handleKey(s, "s", {});
    expect(ask.effects).toEqual([]);
    expect(ask.state.confirm).toEqual({ action: "stop", run: "a" });
    expect(ask.state.status?.text).toBe("Stop run a? [y/n]");
    expect(handleKey(ask.state, "y", {}).effects).toEqual([{ type: "stop", run: "a", abort: false }]);
    const cancelled = handleKey(ask.state, "n", {});
    expect(cancelled.effects).toEqual([]);
    expect(cancelled.state.confirm).toBeUndefined();
    expect(cancelled.state.status?.text).toBe("Cancelled.");
    // q while asking is an answer (no), not a quit.
    expect(handleKey(ask.state, "q", {}).effects).toEqual([]);
    const abort = handleKey(s, "x", {});
    expect(abort.state.status?.text).toBe("Abort run a? [y/n]");
    expect(handleKey(abort.state, "y", {}).effects).toEqual([{ type: "stop", run: "a", abort: true }]);
    const onDone = handleKey(handleKey(s, "j", {}).state, "s", {});
    expect(onDone.state.confirm).toBeUndefined();
    expect(onDone.state.status?.text).toBe("Run done has already finished.");
  });

  it("f opens the fleets view and polls; r, Tab or Esc go back; q and Ctrl-C quit from anywhere", () => {
    const s = loaded(fakeRun("a", RunStatus.RUNNING, 1));
    const fleets = handleKey(s, "f", {});
    expect(fleets.state.view).toBe("fleets");
    expect(fleets.effects).toEqual([{ type: "watch-fleets" }]);
    for (const [input, key] of [["r", {}], ["", { tab: true }], ["", { escape: true }]] as const) {
      const back = handleKey(fleets.state, input, key);
      expect(back.state.view).toBe("runs");
      expect(back.effects).toEqual([{ type: "unwatch-fleets" }]);
    }
    const logs = handleKey(s, "", { return: true }).state;
    expect(handleKey(logs, "f", {}).effects).toEqual([{ type: "unfollow-logs" }, { type: "watch-fleets" }]);
    for (const st of [s, fleets.state, logs]) {
      expect(handleKey(st, "q", {}).effects).toEqual([{ type: "quit" }]);
      expect(handleKey(st, "c", { ctrl: true }).effects).toEqual([{ type: "quit" }]);
    }
  });

  it("collects log text into lines, keeps the last screenful in view, scrolls, and ignores another run's text", () => {
    let s = handleKey(loaded(fakeRun("a", RunStatus.RUNNING, 1)), "", { return: true }).state;
    s = reduce(s, { type: "log-text", run: "a", text: "one\ntw" });
    s = reduce(s, { type: "log-text", run: "a", text: "o\nthree\nfo" });
    s = reduce(s, { type: "log-text", run: "other", text: "nope\n" });
    expect(s.logs?.lines).toEqual(["one", "two", "three"]);
    expect(logWindow(s.logs!, 2)).toEqual(["three", "fo"]);
    // (a page is 2 lines here)
    expect(logWindow(handleKey(s, "g", {}, 2).state.logs!, 2)).toEqual(["one", "two"]);
    s = handleKey(s, "k", {}, 2).state;
    expect(logWindow(s.logs!, 2)).toEqual(["two", "three"]);
    // Scrolled up, new lines do not move the view.
    s = reduce(s, { type: "log-text", run: "a", text: "ur\nfive\n" });
    expect(logWindow(s.logs!, 2)).toEqual(["two", "three"]);
    s = handleKey(s, "G", {}).state;
    expect(logWindow(s.logs!, 2)).toEqual(["four", "five"]);
    s = reduce(s, { type: "log-end", run: "a", error: "boom" });
    expect(s.logs?.ended).toBe(true);
    expect(s.status).toEqual({ text: "Logs of a: boom", error: true });
  });

  it("cleans log lines: colours, cursor moves and \\r redraws do not reach the screen", () => {
    expect(cleanLogLine("\x1b[31mred\x1b[0m")).toBe("red");
    expect(cleanLogLine("10%\r50%\r100%\r")).toBe("100%");
    expect(cleanLogLine("a\tb")).toBe("a       b");
    expect(cleanLogLine("\x1b]0;title\x07x\x1b[2Ky")).toBe("xy");
  });

  it("scrolls the runs table just enough to keep the selected rows in view", () => {
    const lines = Array.from({ length: 10 }, (_, i) => i);
    expect(windowAround(lines, 0, 0, 4)).toEqual({ start: 0, items: [0, 1, 2, 3] });
    expect(windowAround(lines, 6, 6, 4)).toEqual({ start: 3, items: [3, 4, 5, 6] });
    expect(windowAround(lines, 8, 9, 4)).toEqual({ start: 6, items: [6, 7, 8, 9] });
    expect(windowAround(lines, 2, 3, 20).items).toHaveLength(10);
  });

  it("clears only the status line it was asked to", () => {
    let s = reduce(initialState(), { type: "status", text: "Runs: down", error: true });
    expect(reduce(s, { type: "clear-status", ifText: "other" }).status?.text).toBe("Runs: down");
    s = reduce(s, { type: "clear-status", ifText: "Runs: down" });
    expect(s.status).toBeUndefined();
  });
});
