// Errors a user can act on: each issue names the path, the line and column in the file, and
// what is wrong. No stack traces for configuration mistakes.

export type IssuePath = (string | number)[];

export interface ConfigurationIssue {
  /** Keys and indexes from the document root to the offending value. */
  path: IssuePath;
  /** 1-based line in the YAML text. */
  line: number;
  /** 1-based column in the YAML text. */
  column: number;
  message: string;
}

export function formatPath(path: IssuePath): string {
  let out = "";
  for (const seg of path) out += typeof seg === "number" ? `[${seg}]` : out ? `.${seg}` : seg;
  return out;
}

/** A configuration file that cannot be used; `message` is a readable multi-line summary. */
export class ConfigurationError extends Error {
  override name = "ConfigurationError";
  readonly fileName: string;
  readonly issues: ConfigurationIssue[];

  constructor(fileName: string, issues: ConfigurationIssue[]) {
    const sorted = [...issues].sort((a, b) => a.line - b.line || a.column - b.column);
    const lines = sorted.map((i) => {
      const where = i.path.length ? ` ${formatPath(i.path)}:` : "";
      return `${fileName}:${i.line}:${i.column}:${where} ${i.message}`;
    });
    super(lines.join("\n"));
    this.fileName = fileName;
    this.issues = sorted;
  }
}

/** Edit distance between two strings (insert, delete, substitute, transpose adjacent). */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/** The closest candidate to `word`, if it is close enough to be a plausible typo. */
export function closestMatch(word: string, candidates: readonly string[]): string | undefined {
  const w = word.toLowerCase().replace(/-/g, "_");
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase().replace(/-/g, "_"));
    if (d < bestD) {
      bestD = d;
      best = c;
    }
  }
  const limit = Math.max(1, Math.min(3, Math.floor(word.length / 3)));
  if (bestD <= limit) return best;
  // An abbreviation such as `dev-env` for `dev-environment`.
  return w.length >= 3 ? candidates.find((c) => c.toLowerCase().replace(/-/g, "_").startsWith(w)) : undefined;
}
