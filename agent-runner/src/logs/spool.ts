// The log spool: an append-only file of numbered entries that are not yet acknowledged, so a
// runner that restarts in the same home resends them. Record = u32 length (of what follows),
// u64 sequence, LogEntry in protobuf binary. A torn record at the end (crash mid-write) is cut off.
// The acked position lives beside it in a small JSON file, replaced atomically.
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import { LogEntrySchema, type LogEntry } from "@dstack/proto/agent";

export interface SpooledEntry {
  seq: number;
  entry: LogEntry;
  /** Size of the record on disk. */
  bytes: number;
}

interface SpoolState {
  jobSubmissionId: string;
  acked: number;
}

const HEADER = 12;

export class LogSpool {
  private fd: number;
  private size = 0;
  readonly file: string;
  private readonly stateFile: string;

  /** Opens (or creates) the spool in `dir`; what it holds is returned by `recovered`. */
  constructor(
    dir: string,
    private readonly jobSubmissionId: string,
  ) {
    mkdirSync(dir, { recursive: true });
    this.file = join(dir, "logs.spool");
    this.stateFile = join(dir, "logs.state.json");
    const state = this.readState();
    const same = state?.jobSubmissionId === jobSubmissionId;
    this.acked = same ? state.acked : 0;
    this.recovered = same ? this.readAll() : [];
    this.fd = openSync(this.file, same ? "a+" : "w+");
    // Cut a torn tail; from here on the file holds whole records only.
    this.size = this.recovered.reduce((n, r) => n + r.bytes, 0);
    if (!same) this.saveState(0);
    else ftruncateSync(this.fd, this.size);
    this.recovered = this.recovered.filter((r) => r.seq >= this.acked);
  }

  /** The acked position read at open (entries below it were stored by the server). */
  readonly acked: number;
  /** Unacked entries found at open, oldest first. */
  recovered: SpooledEntry[];

  get bytes(): number {
    return this.size;
  }

  append(seq: number, entry: LogEntry): number {
    const body = toBinary(LogEntrySchema, entry);
    const rec = Buffer.allocUnsafe(HEADER + body.length);
    rec.writeUInt32BE(8 + body.length, 0);
    rec.writeBigUInt64BE(BigInt(seq), 4);
    rec.set(body, HEADER);
    writeSync(this.fd, rec);
    this.size += rec.length;
    return rec.length;
  }

  /** Records how far the server has stored. */
  saveState(acked: number): void {
    const tmp = `${this.stateFile}.tmp`;
    writeFileSync(tmp, JSON.stringify({ jobSubmissionId: this.jobSubmissionId, acked } satisfies SpoolState));
    renameSync(tmp, this.stateFile);
  }

  /** Replaces the spool with `live` (the unacked entries), dropping everything acked. */
  rewrite(live: readonly { seq: number; entry: LogEntry }[], acked: number): void {
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, "w");
    let size = 0;
    for (const e of live) {
      const body = toBinary(LogEntrySchema, e.entry);
      const rec = Buffer.allocUnsafe(HEADER + body.length);
      rec.writeUInt32BE(8 + body.length, 0);
      rec.writeBigUInt64BE(BigInt(e.seq), 4);
      rec.set(body, HEADER);
      writeSync(fd, rec);
      size += rec.length;
    }
    closeSync(fd);
    // State first: if we crash between the two, the old spool is read with the new ack and its
    // acked records are skipped.
    this.saveState(acked);
    renameSync(tmp, this.file);
    closeSync(this.fd);
    this.fd = openSync(this.file, "a+");
    this.size = size;
  }

  close(): void {
    closeSync(this.fd);
  }

  private readState(): SpoolState | null {
    if (!existsSync(this.stateFile)) return null;
    try {
      const s = JSON.parse(readFileSync(this.stateFile, "utf8")) as SpoolState;
      return typeof s.acked === "number" && typeof s.jobSubmissionId === "string" ? s : null;
    } catch {
      return null;
    }
  }

  private readAll(): SpooledEntry[] {
    if (!existsSync(this.file)) return [];
    const buf = readFileSync(this.file);
    const out: SpooledEntry[] = [];
    let off = 0;
    while (off + HEADER <= buf.length) {
      const len = buf.readUInt32BE(off);
      if (len < 8 || off + 4 + len > buf.length) break;
      const seq = Number(buf.readBigUInt64BE(off + 4));
      try {
        out.push({ seq, entry: fromBinary(LogEntrySchema, buf.subarray(off + HEADER, off + 4 + len)), bytes: 4 + len });
      } catch {
        break;
      }
      off += 4 + len;
    }
    return out;
  }
}
