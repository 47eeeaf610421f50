// The shim's log: one JSON object per line on stderr ({time, level, msg, ...fields}), so journald
// and log shippers can parse it without a format of our own.

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export type LogFields = Record<string, unknown>;

export interface Logger {
  readonly level: LogLevel;
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  /** Lines below this level are dropped; default "info". */
  level?: LogLevel;
  /** Where lines go; default process.stderr. */
  write?: (line: string) => void;
  /** Fields on every line. */
  fields?: LogFields;
}

export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

// Errors stringify to {} by default; a log line should carry what went wrong.
function plain(v: unknown): unknown {
  if (v instanceof Error) return v.message;
  if (typeof v === "bigint") return v.toString();
  return v;
}

export function createLogger(o: LoggerOptions = {}): Logger {
  const level = o.level ?? "info";
  const min = LOG_LEVELS.indexOf(level);
  const write = o.write ?? ((line: string) => void process.stderr.write(line));
  const base = o.fields ?? {};
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (LOG_LEVELS.indexOf(lvl) < min) return;
    const rec: LogFields = { time: new Date().toISOString(), level: lvl, msg };
    for (const [k, v] of Object.entries({ ...base, ...fields })) if (v !== undefined) rec[k] = plain(v);
    let line: string;
    try {
      line = JSON.stringify(rec, (_k, v: unknown) => plain(v));
    } catch {
      line = JSON.stringify({ time: rec.time, level: lvl, msg, fields: "unserializable" });
    }
    write(line + "\n");
  };
  return {
    level,
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger({ ...o, level, fields: { ...base, ...fields } }),
  };
}

/** Drops everything; the default where a caller gives no logger. */
export const silentLogger: Logger = createLogger({ level: "error", write: () => {} });
