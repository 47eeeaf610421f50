// A push-to-pull queue: the link writes messages as they come, the RPC stream pulls them.
// Ending it (or failing it) finishes the iterator, so a handler's `for await` returns or throws.
//
// The iterator is a plain object, not an async generator: a link's stream already runs each
// message through connect's chain of async generators, and a generator here would add a few
// promises per message that live until the next message (seconds on a heartbeat-only link), so
// they outlive young-generation GCs and pile up in the old generation at thousands of links.
export class AsyncQueue<T> implements AsyncIterable<T> {
  private items: T[] = [];
  private waiter: ((r: IteratorResult<T>) => void) | null = null;
  private failWaiter: ((e: unknown) => void) | null = null;
  private done = false;
  private error: unknown = undefined;

  get closed(): boolean {
    return this.done;
  }

  push(item: T): boolean {
    if (this.done) return false;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = this.failWaiter = null;
      w({ value: item, done: false });
    } else this.items.push(item);
    return true;
  }

  /** Ends the iterator after the queued items (or at once with `error`, dropping them). */
  end(error?: unknown): void {
    if (this.done) return;
    this.done = true;
    this.error = error;
    if (error !== undefined) this.items = [];
    if (this.waiter) {
      const w = this.waiter;
      const f = this.failWaiter!;
      this.waiter = this.failWaiter = null;
      if (error !== undefined) f(error);
      else w({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    // Per iterator, as a generator would be: finished after its end, its error, or return().
    let finished = false;
    // This iterator's next() result that still waits, if any: a next() called meanwhile is answered after it.
    let waiting: Promise<IteratorResult<T>> | null = null;
    const finish = (): IteratorResult<T> => ((finished = true), { value: undefined, done: true });
    const pull = (): Promise<IteratorResult<T>> => {
      if (finished) return Promise.resolve({ value: undefined, done: true });
      if (this.items.length) return Promise.resolve({ value: this.items.shift()!, done: false });
      if (this.done) {
        finished = true;
        return this.error !== undefined ? Promise.reject(this.error) : Promise.resolve({ value: undefined, done: true });
      }
      const p = new Promise<IteratorResult<T>>((resolve, reject) => {
        this.waiter = (r) => {
          if (waiting === p) waiting = null;
          if (r.done) finished = true;
          resolve(r);
        };
        this.failWaiter = (e) => {
          if (waiting === p) waiting = null;
          finished = true;
          reject(e);
        };
      });
      return (waiting = p);
    };
    const it: AsyncIterableIterator<T> = {
      // Iterable itself, as a generator is: connect's pipelines iterate the iterator they were given.
      [Symbol.asyncIterator]: () => it,
      next: () => {
        if (waiting === null) return pull();
        const p = waiting.then(pull, pull);
        waiting = p;
        const clear = () => void (waiting === p && (waiting = null));
        p.then(clear, clear);
        return p;
      },
      return: (value?: unknown) => {
        finish();
        return Promise.resolve({ value: value as T, done: true });
      },
      // connect's pipelines require it (makeIterableAbortable); like a generator's, it finishes the iterator.
      throw: (e?: unknown) => {
        finish();
        return Promise.reject(e);
      },
    };
    return it;
  }
}
