// Plain-text tables in the shape dstack's rich tables print with `box=None`: a one-space margin,
// two spaces between columns, headers in capitals, no borders. Colour is applied after padding
// so ANSI codes never skew the widths.

export type Style = (s: string) => string;

export interface Column {
  header: string;
  /** Right-align (numbers). */
  right?: boolean;
}

export interface Cell {
  text: string;
  style?: Style;
}

export type Row = (string | Cell)[];

const cell = (c: string | Cell | undefined): Cell => (typeof c === "string" ? { text: c } : (c ?? { text: "" }));

/** Character width as a terminal shows it (combining marks ignored; wide CJK not needed here). */
const width = (s: string) => [...s].length;

export function renderTable(columns: Column[], rows: Row[], opts: { headerStyle?: Style } = {}): string {
  const cells = rows.map((r) => columns.map((_, i) => cell(r[i])));
  const widths = columns.map((c, i) => Math.max(width(c.header), ...cells.map((r) => width(r[i]!.text))));
  const line = (parts: Cell[]) => {
    const padded = parts.map((p, i) => {
      const pad = " ".repeat(widths[i]! - width(p.text));
      const text = columns[i]!.right ? pad + p.text : p.text + pad;
      // The last column is not padded on the right: no trailing spaces.
      const shown = i === parts.length - 1 && !columns[i]!.right ? p.text : text;
      return p.style ? p.style(shown) : shown;
    });
    return ` ${padded.join("  ")}`.replace(/\s+$/, "");
  };
  const header = line(columns.map((c) => ({ text: c.header, ...(opts.headerStyle ? { style: opts.headerStyle } : {}) })));
  return [header, ...cells.map(line)].join("\n") + "\n";
}
