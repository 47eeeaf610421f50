// `dstack ui`: the dashboard's state and what keys do to it, as plain functions (no Ink, no I/O),
// so they can be tested alone. Keys give a new state plus effects (stop a run, follow its logs,
// quit…) that the controller (controller.ts) carries out; data from the server comes back in as
// actions through `reduce`.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Fleet, Run } from "@dstack/proto/api";
import { isRunFinished } from "../client/client.js";

export type View = "runs" | "logs" | "fleets";

export interface StatusLine {
  text: string;
  error: boolean;
}

export interface LogsState {
  run: string;
  /** Complete lines, oldest first (at most MAX_LOG_LINES). */
  lines: string[];
  /** The text after the last newline. */
  partial: string;
  /** The run finished and every line was sent, or following failed. */
  ended: boolean;
  /** Lines scrolled up from the bottom (0 = follow the end). */
  scroll: number;
}

export interface UiState {
  view: View;
  /** Every run the watch reported, keyed by run id. */
  runs: Map<string, Run>;
  runsLoaded: boolean;
  /** Show every finished run, not only the newest few. */
  showAll: boolean;
  /** The id of the selected run. */
  selected: string | undefined;
  logs: LogsState | undefined;
  fleets: Fleet[];
  fleetsLoaded: boolean;
  status: StatusLine | undefined;
  /** A stop or abort waiting for y/n. */
  confirm: { action: "stop" | "abort"; run: string } | undefined;
}

export const MAX_LOG_LINES = 5000;
/** Finished runs shown below the active ones unless `a` shows all of them. */
export const FINISHED_SHOWN = 10;

export function initialState(): UiState {
  return {
    view: "runs",
    runs: new Map(),
    runsLoaded: false,
    showAll: false,
    selected: undefined,
    logs: undefined,
    fleets: [],
    fleetsLoaded: false,
    status: undefined,
    confirm: undefined,
  };
}

export type Action =
  | { type: "runs-snapshot"; runs: Run[] }
  | { type: "run-update"; run: Run }
  | { type: "fleets"; fleets: Fleet[] }
  | { type: "log-text"; run: string; text: string }
  | { type: "log-end"; run: string; error?: string }
  | { type: "status"; text: string; error?: boolean }
  | { type: "clear-status"; ifText?: string };

const submitted = (r: Run) => (r.submittedAt ? timestampDate(r.submittedAt).getTime() : 0);

/** The runs the table shows, newest first: every active run, then the newest finished ones (all with showAll). */
export function visibleRuns(state: UiState): Run[] {
  const all = [...state.runs.values()].sort((a, b) => submitted(b) - submitted(a));
  if (state.showAll) return all;
  const active = all.filter((r) => !isRunFinished(r));
  const finished = all.filter((r) => isRunFinished(r)).slice(0, FINISHED_SHOWN);
  return [...active, ...finished].sort((a, b) => submitted(b) - submitted(a));
}

export const runNameOf = (r: Run | undefined): string => r?.runSpec?.runName ?? "";

export function selectedRun(state: UiState): Run | undefined {
  const runs = visibleRuns(state);
  return runs.find((r) => r.id === state.selected) ?? runs[0];
}

/** Keeps the selection on a shown run (the first one when the selected one went away). */
function fixSelection(state: UiState): UiState {
  const runs = visibleRuns(state);
  if (runs.some((r) => r.id === state.selected)) return state;
  return { ...state, selected: runs[0]?.id };
}

// Terminal control sequences in a job's output would move Ink's cursor: they are dropped.
// eslint-disable-next-line no-control-regex
const CONTROL = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]|[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]/g;

/** One line of output as the screen shows it: control sequences dropped, tabs expanded, and a `\r` redraw (progress bars) keeps only its last text. */
export function cleanLogLine(line: string): string {
  const afterCr = line.replace(/\r+$/, "").split("\r").at(-1) ?? "";
  let out = "";
  for (const ch of afterCr.replace(CONTROL, "")) out += ch === "\t" ? " ".repeat(8 - (out.length % 8)) : ch;
  return out;
}

export function reduce(state: UiState, action: Action): UiState {
  switch (action.type) {
    case "runs-snapshot": {
      const runs = new Map<string, Run>();
      for (const r of action.runs) if (!r.deleted) runs.set(r.id, r);
      return fixSelection({ ...state, runs, runsLoaded: true });
    }
    case "run-update": {
      const runs = new Map(state.runs);
      if (action.run.deleted) runs.delete(action.run.id);
      else runs.set(action.run.id, action.run);
      return fixSelection({ ...state, runs });
    }
    case "fleets":
      return { ...state, fleets: action.fleets, fleetsLoaded: true };
    case "log-text": {
      if (!state.logs || state.logs.run !== action.run) return state;
      const parts = (state.logs.partial + action.text).split("\n");
      const partial = parts.pop() ?? "";
      const added = parts.map(cleanLogLine);
      const lines = [...state.logs.lines, ...added].slice(-MAX_LOG_LINES);
      // Scrolled up, the view stays on the same lines while new ones arrive.
      const shown = (l: string[], p: string) => l.length + (p ? 1 : 0);
      const grown = shown(lines, partial) - shown(state.logs.lines, state.logs.partial) + Math.max(0, state.logs.lines.length + added.length - MAX_LOG_LINES);
      const scroll = state.logs.scroll > 0 ? Math.max(0, Math.min(state.logs.scroll + grown, shown(lines, partial))) : 0;
      return { ...state, logs: { ...state.logs, lines, partial, scroll } };
    }
    case "log-end": {
      if (!state.logs || state.logs.run !== action.run) return state;
      const logs = { ...state.logs, ended: true };
      return action.error ? { ...state, logs, status: { text: `Logs of ${action.run}: ${action.error}`, error: true } } : { ...state, logs };
    }
    case "status":
      return { ...state, status: { text: action.text, error: action.error ?? false } };
    case "clear-status":
      if (action.ifText !== undefined && state.status?.text !== action.ifText) return state;
      return { ...state, status: undefined };
  }
}

/** The keys a handler looks at (a subset of Ink's `Key`). */
export interface KeyInfo {
  upArrow?: boolean;
  downArrow?: boolean;
  leftArrow?: boolean;
  rightArrow?: boolean;
  pageUp?: boolean;
  pageDown?: boolean;
  home?: boolean;
  end?: boolean;
  return?: boolean;
  escape?: boolean;
  ctrl?: boolean;
  tab?: boolean;
  backspace?: boolean;
}

export type Effect =
  | { type: "quit" }
  | { type: "follow-logs"; run: string }
  | { type: "unfollow-logs" }
  | { type: "stop"; run: string; abort: boolean }
  | { type: "watch-fleets" }
  | { type: "unwatch-fleets" };

export interface KeyResult {
  state: UiState;
  effects: Effect[];
}

/** What the keys of each view are, for the footer. */
export function footerKeys(state: UiState): string {
  if (state.confirm) return "y confirm · any other key cancels";
  switch (state.view) {
    case "runs":
      return `↑/↓ select · Enter logs · s stop · x abort · a ${state.showAll ? "recent" : "all"} runs · f fleets · q quit`;
    case "logs":
      return "↑/↓ PgUp/PgDn scroll · End follow · Esc/← back · s stop · x abort · f fleets · q quit";
    case "fleets":
      return "r/Tab runs · q quit";
  }
}

function askStop(state: UiState, run: Run | undefined, abort: boolean): KeyResult {
  if (!run) return { state: { ...state, status: { text: "No run selected.", error: false } }, effects: [] };
  const name = runNameOf(run);
  if (isRunFinished(run)) return { state: { ...state, status: { text: `Run ${name} has already finished.`, error: false } }, effects: [] };
  const action = abort ? "abort" : "stop";
  return { state: { ...state, confirm: { action, run: name }, status: { text: `${abort ? "Abort" : "Stop"} run ${name}? [y/n]`, error: false } }, effects: [] };
}

function toFleets(state: UiState, effects: Effect[] = []): KeyResult {
  return { state: { ...state, view: "fleets", status: undefined }, effects: [...effects, { type: "watch-fleets" }] };
}

function toRuns(state: UiState): KeyResult {
  const effects: Effect[] = state.view === "logs" ? [{ type: "unfollow-logs" }] : state.view === "fleets" ? [{ type: "unwatch-fleets" }] : [];
  return { state: { ...state, view: "runs", logs: undefined }, effects };
}

/**
 * What a key does. `input` is the typed text (Ink's first useInput argument), `key` the special
 * keys; `pageSize` is how many lines a page scroll moves.
 */
export function handleKey(state: UiState, input: string, key: KeyInfo, pageSize = 10): KeyResult {
  const none = (s: UiState = state): KeyResult => ({ state: s, effects: [] });
  if (key.ctrl && input === "c") return { state, effects: [{ type: "quit" }] };
  if (state.confirm) {
    const { action, run } = state.confirm;
    if (input === "y" || input === "Y") {
      return { state: { ...state, confirm: undefined, status: { text: `${action === "abort" ? "Aborting" : "Stopping"} ${run}…`, error: false } }, effects: [{ type: "stop", run, abort: action === "abort" }] };
    }
    return none({ ...state, confirm: undefined, status: { text: "Cancelled.", error: false } });
  }
  if (input === "q") return { state, effects: [{ type: "quit" }] };
  switch (state.view) {
    case "runs": {
      const runs = visibleRuns(state);
      const at = Math.max(0, runs.findIndex((r) => r.id === state.selected));
      const move = (to: number) => none({ ...state, selected: runs[Math.max(0, Math.min(runs.length - 1, to))]?.id });
      if (key.upArrow || input === "k") return move(at - 1);
      if (key.downArrow || input === "j") return move(at + 1);
      if (key.pageUp) return move(at - pageSize);
      if (key.pageDown) return move(at + pageSize);
      if (key.home || input === "g") return move(0);
      if (key.end || input === "G") return move(runs.length - 1);
      if (key.return || key.rightArrow) {
        const run = selectedRun(state);
        if (!run) return none();
        const name = runNameOf(run);
        return {
          state: { ...state, selected: run.id, view: "logs", logs: { run: name, lines: [], partial: "", ended: false, scroll: 0 }, status: undefined },
          effects: [{ type: "follow-logs", run: name }],
        };
      }
      if (input === "s" || input === "x") return askStop(state, selectedRun(state), input === "x");
      if (input === "a") return none(fixSelection({ ...state, showAll: !state.showAll }));
      if (input === "f" || key.tab) return toFleets(state);
      return none();
    }
    case "logs": {
      const logs = state.logs;
      if (key.escape || key.leftArrow || key.backspace || input === "r") return toRuns(state);
      if (input === "f" || key.tab) return toFleets({ ...state, logs: undefined }, [{ type: "unfollow-logs" }]);
      if (!logs) return none();
      const total = logs.lines.length + (logs.partial ? 1 : 0);
      const scrollTo = (n: number) => none({ ...state, logs: { ...logs, scroll: Math.max(0, Math.min(total - pageSize, n)) } });
      if (key.upArrow || input === "k") return scrollTo(logs.scroll + 1);
      if (key.downArrow || input === "j") return scrollTo(logs.scroll - 1);
      if (key.pageUp) return scrollTo(logs.scroll + pageSize);
      if (key.pageDown) return scrollTo(logs.scroll - pageSize);
      if (key.home || input === "g") return scrollTo(total);
      if (key.end || input === "G") return scrollTo(0);
      if (input === "s" || input === "x") {
        const run = [...state.runs.values()].find((r) => r.id === state.selected) ?? [...state.runs.values()].find((r) => runNameOf(r) === logs.run);
        return askStop(state, run, input === "x");
      }
      return none();
    }
    case "fleets":
      if (input === "r" || key.tab || key.escape || key.leftArrow) return toRuns(state);
      return none();
  }
}

/** The `height` lines of `lines` to show so that index `selected` is on screen (the window scrolls as little as it can). */
export function windowAround<T>(lines: T[], first: number, last: number, height: number): { start: number; items: T[] } {
  if (height <= 0) return { start: 0, items: [] };
  if (lines.length <= height) return { start: 0, items: lines };
  // Keep the selected rows [first, last] in view, preferring to show the selected run's first row.
  let start = Math.max(0, last - height + 1);
  if (first < start) start = first;
  start = Math.min(start, lines.length - height);
  return { start, items: lines.slice(start, start + height) };
}

/** The log lines to show in `height` rows: the end, or `scroll` lines above it. */
export function logWindow(logs: LogsState, height: number): string[] {
  const all = logs.partial ? [...logs.lines, cleanLogLine(logs.partial)] : logs.lines;
  if (height <= 0) return [];
  // Scrolled to the top, the screen stays full.
  const end = Math.max(Math.min(height, all.length), all.length - logs.scroll);
  return all.slice(Math.max(0, end - height), end);
}
