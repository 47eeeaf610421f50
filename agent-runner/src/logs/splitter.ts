// Cuts a byte stream into log entries at line ends: whatever complete lines a read brings go out
// as one entry, a trailing partial line waits for its newline (or `partialFlushMs`, so a progress
// bar or a prompt without a newline still shows up), and no entry exceeds `maxEntryBytes`.

export const DEFAULT_PARTIAL_FLUSH_MS = 100;
/** LogEntry.data is at most 64 KiB (log.proto). */
export const MAX_ENTRY_BYTES = 64 * 1024;

export class LineSplitter {
  private pending: Buffer = Buffer.alloc(0);
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly emit: (data: Buffer) => void,
    private readonly partialFlushMs = DEFAULT_PARTIAL_FLUSH_MS,
    private readonly maxEntryBytes = MAX_ENTRY_BYTES,
  ) {}

  write(chunk: Buffer): void {
    let buf = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    const lastNl = buf.lastIndexOf(0x0a);
    if (lastNl >= 0) {
      this.out(buf.subarray(0, lastNl + 1));
      buf = buf.subarray(lastNl + 1);
    }
    // A very long line without a newline: ship whole pieces now, keep the remainder.
    while (buf.length >= this.maxEntryBytes) {
      this.emit(Buffer.from(buf.subarray(0, this.maxEntryBytes)));
      buf = buf.subarray(this.maxEntryBytes);
    }
    this.pending = Buffer.from(buf);
    if (this.pending.length === 0) this.clearTimer();
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = null;
        this.flush();
      }, this.partialFlushMs);
    }
  }

  /** Emits the partial line now (end of stream, or its time ran out). */
  flush(): void {
    this.clearTimer();
    if (this.pending.length) {
      const p = this.pending;
      this.pending = Buffer.alloc(0);
      this.emit(p);
    }
  }

  private out(buf: Buffer): void {
    for (let i = 0; i < buf.length; i += this.maxEntryBytes) this.emit(Buffer.from(buf.subarray(i, i + this.maxEntryBytes)));
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}
