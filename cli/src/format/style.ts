// Colour only for a person at a terminal: never when the stream is a pipe or a file, never
// with NO_COLOR set (https://no-color.org), always with FORCE_COLOR.
import type { Style } from "./table.js";

export interface Palette {
  enabled: boolean;
  bold: Style;
  dim: Style;
  red: Style;
  green: Style;
  yellow: Style;
  blue: Style;
}

const sgr = (open: number, close: number): Style => (s) => (s ? `\x1b[${open}m${s}\x1b[${close}m` : s);
const plain: Style = (s) => s;

export function palette(stream: { isTTY?: boolean }, env: NodeJS.ProcessEnv): Palette {
  const enabled = env.FORCE_COLOR ? env.FORCE_COLOR !== "0" : Boolean(stream.isTTY) && !env.NO_COLOR && env.TERM !== "dumb";
  if (!enabled) return { enabled, bold: plain, dim: plain, red: plain, green: plain, yellow: plain, blue: plain };
  return { enabled, bold: sgr(1, 22), dim: sgr(90, 39), red: sgr(31, 39), green: sgr(32, 39), yellow: sgr(33, 39), blue: sgr(36, 39) };
}

export const noColor: Palette = palette({ isTTY: false }, {});
