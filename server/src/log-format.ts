// Server logs for people: pino writes one JSON object per line; on the way to stderr each becomes
// `19:18:24 INFO  message key=value …`. `DSTACK_SERVER_LOG_FORMAT=json` keeps the JSON (for log
// shippers).
import { Writable } from "node:stream";

const LEVELS: Record<number, string> = { 10: "TRACE", 20: "DEBUG", 30: "INFO ", 40: "WARN ", 50: "ERROR", 60: "FATAL" };
const SKIP = new Set(["level", "time", "pid", "hostname", "msg", "v"]);

function value(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  if (v && typeof v === "object" && "message" in v && typeof (v as { message: unknown }).message === "string") return JSON.stringify((v as { message: string }).message);
  return JSON.stringify(v);
}

/** One pino JSON line as a human line; lines that are not JSON pass through unchanged. */
export function formatLogLine(line: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  if (typeof o !== "object" || o === null || typeof o.level !== "number") return line;
  const time = new Date(typeof o.time === "number" ? o.time : Date.now()).toTimeString().slice(0, 8);
  const fields = Object.entries(o)
    .filter(([k, v]) => !SKIP.has(k) && v !== undefined)
    .map(([k, v]) => `${k}=${value(k === "err" && v && typeof v === "object" ? ((v as { message?: unknown }).message ?? v) : v)}`);
  return [time, LEVELS[o.level] ?? String(o.level), String(o.msg ?? ""), ...fields].join(" ").trimEnd();
}

export function humanLogStream(out: NodeJS.WritableStream = process.stderr): Writable {
  let rest = "";
  return new Writable({
    write(chunk: Buffer | string, _enc, done) {
      const lines = (rest + chunk.toString()).split("\n");
      rest = lines.pop() ?? "";
      for (const l of lines) if (l) out.write(formatLogLine(l) + "\n");
      done();
    },
    final(done) {
      if (rest) out.write(formatLogLine(rest) + "\n");
      done();
    },
  });
}
