// `dstack ui`: the Ink components. They draw the Dashboard's state (controller.ts) and hand it
// the keys; all logic lives in state.ts and controller.ts.
import { Box, Text, useApp, useInput, useStdout } from "ink";
import { useEffect, useState, useSyncExternalStore } from "react";
import { formatFleetsTable } from "../format/fleets.js";
import { formatRunsTableLines } from "../format/runs.js";
import { noColor, type Palette } from "../format/style.js";
import type { Dashboard } from "./controller.js";
import { footerKeys, logWindow, visibleRuns, windowAround, type UiState } from "./state.js";

export interface AppProps {
  dashboard: Dashboard;
  /** Colours of the tables' cells (the runs' statuses); none by default. */
  palette?: Palette;
}

function useTerminalSize(): { columns: number; rows: number } {
  const { stdout } = useStdout();
  const read = () => ({ columns: stdout.columns || 80, rows: stdout.rows || 24 });
  const [size, setSize] = useState(read);
  useEffect(() => {
    const onResize = () => setSize(read());
    stdout.on("resize", onResize);
    return () => {
      stdout.off("resize", onResize);
    };
  }, [stdout]);
  return size;
}

export function App({ dashboard, palette = noColor }: AppProps) {
  const state = useSyncExternalStore(dashboard.subscribe, dashboard.getState);
  const { exit } = useApp();
  const { columns, rows } = useTerminalSize();
  useEffect(() => dashboard.onQuit(() => exit()), [dashboard, exit]);
  useInput((input, key) => dashboard.key(input, key));
  // One line short of the screen: a frame as tall as the terminal makes Ink clear it on every redraw.
  const bodyHeight = Math.max(1, rows - 4);
  dashboard.pageSize = Math.max(1, bodyHeight - 2);
  return (
    <Box flexDirection="column" width={columns} height={rows - 1}>
      <Header dashboard={dashboard} state={state} />
      <Box flexDirection="column" height={bodyHeight} overflow="hidden">
        {state.view === "runs" ? <RunsView state={state} height={bodyHeight} palette={palette} /> : null}
        {state.view === "logs" ? <LogsView state={state} height={bodyHeight} /> : null}
        {state.view === "fleets" ? <FleetsView state={state} height={bodyHeight} palette={palette} /> : null}
      </Box>
      <Text wrap="truncate" color={state.status?.error ? "red" : state.confirm ? "yellow" : undefined}>
        {state.status?.text ?? " "}
      </Text>
      <Text wrap="truncate" dimColor>
        {footerKeys(state)}
      </Text>
    </Box>
  );
}

function Header({ dashboard, state }: { dashboard: Dashboard; state: UiState }) {
  const where = state.view === "logs" ? `logs of ${state.logs?.run ?? ""}` : state.view;
  return (
    <Text wrap="truncate">
      <Text bold>dstack</Text> {dashboard.client.serverUrl} · project <Text bold>{dashboard.client.project}</Text> · {where}
    </Text>
  );
}

function RunsView({ state, height, palette }: { state: UiState; height: number; palette: Palette }) {
  if (!state.runsLoaded) return <Text dimColor>Loading runs…</Text>;
  const runs = visibleRuns(state);
  if (runs.length === 0) return <Text dimColor>No runs yet. Submit one with dstack apply.</Text>;
  const { header, rows } = formatRunsTableLines(runs, { palette });
  const selected = Math.max(0, runs.findIndex((r) => r.id === state.selected));
  const first = rows.findIndex((r) => r.run === selected);
  const last = rows.findLastIndex((r) => r.run === selected);
  const { start, items } = windowAround(rows, first, last, height - 1);
  return (
    <>
      <Text wrap="truncate">{header}</Text>
      {items.map((row, i) => (
        <Text key={start + i} wrap="truncate" inverse={row.run === selected}>
          {row.text}
        </Text>
      ))}
    </>
  );
}

function LogsView({ state, height }: { state: UiState; height: number }) {
  const logs = state.logs;
  if (!logs) return null;
  const lines = logWindow(logs, height - 1);
  const where = logs.scroll > 0 ? `${logs.scroll} lines above the end` : logs.ended ? "ended" : "following…";
  return (
    <>
      <Text wrap="truncate" dimColor>
        Logs of {logs.run} ({where})
      </Text>
      {lines.length === 0 ? <Text dimColor>{logs.ended ? "No output." : "Waiting for output…"}</Text> : null}
      {lines.map((line, i) => (
        <Text key={i} wrap="truncate">
          {line || " "}
        </Text>
      ))}
    </>
  );
}

function FleetsView({ state, height, palette }: { state: UiState; height: number; palette: Palette }) {
  if (!state.fleetsLoaded) return <Text dimColor>Loading fleets…</Text>;
  if (state.fleets.length === 0) return <Text dimColor>No fleets. Create one with dstack apply -f fleet.dstack.yml.</Text>;
  const lines = formatFleetsTable(state.fleets, { palette }).replace(/\n$/, "").split("\n").slice(0, height);
  return (
    <>
      {lines.map((line, i) => (
        <Text key={i} wrap="truncate">
          {line}
        </Text>
      ))}
    </>
  );
}
