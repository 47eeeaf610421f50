// Coalesces per-key database reads that come in together into one query (a DataLoader without
// the cache). When thousands of agents link at once (a fleet's first start, a server restart),
// each link open asks the same one-row questions; through the ORM each costs ~0.5 ms of CPU, so
// one `IN (…)` query per burst instead of one query per link is what keeps the reconnect storm
// from being bound by query building.

export interface BatchOptions {
  /** How long the first key of a batch waits for others, ms; 0 = until the current I/O phase ends (setImmediate). */
  windowMs?: number;
  /** Most keys per query (SQLite binds at most 32,766 variables; a few hundred keeps each query short). */
  maxKeys?: number;
}

interface Waiter<V> {
  resolve(v: V): void;
  reject(e: unknown): void;
}

export class Batcher<K, V> {
  private pending = new Map<K, Waiter<V>[]>();
  private scheduled = false;
  private readonly windowMs: number;
  private readonly maxKeys: number;

  /** `load` answers for every key it was given; a key missing from its map gets `missing`. */
  constructor(
    private readonly load: (keys: K[]) => Promise<Map<K, V>>,
    private readonly missing: V,
    o: BatchOptions = {},
  ) {
    this.windowMs = o.windowMs ?? 0;
    this.maxKeys = Math.max(1, o.maxKeys ?? 500);
  }

  get(key: K): Promise<V> {
    return new Promise<V>((resolve, reject) => {
      let ws = this.pending.get(key);
      if (!ws) this.pending.set(key, (ws = []));
      ws.push({ resolve, reject });
      if (this.scheduled) return;
      this.scheduled = true;
      if (this.windowMs > 0) setTimeout(() => this.flush(), this.windowMs);
      else setImmediate(() => this.flush());
    });
  }

  private flush(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = new Map();
    const keys = [...batch.keys()];
    for (let i = 0; i < keys.length; i += this.maxKeys) {
      const chunk = keys.slice(i, i + this.maxKeys);
      let loaded: Promise<Map<K, V>>;
      try {
        loaded = this.load(chunk);
      } catch (e) {
        loaded = Promise.reject(e);
      }
      loaded.then(
        (m) => {
          for (const k of chunk) for (const w of batch.get(k)!) w.resolve(m.has(k) ? m.get(k)! : this.missing);
        },
        (e: unknown) => {
          for (const k of chunk) for (const w of batch.get(k)!) w.reject(e);
        },
      );
    }
  }
}
