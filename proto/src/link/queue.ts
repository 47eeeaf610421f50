// A push-to-pull queue: the link writes messages as they come, the RPC stream pulls them.
// Ending it (or failing it) finishes the iterator, so a handler's `for await` returns or throws.
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

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      if (this.items.length) {
        yield this.items.shift()!;
        continue;
      }
      if (this.done) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      const r = await new Promise<IteratorResult<T>>((resolve, reject) => {
        this.waiter = resolve;
        this.failWaiter = reject;
      });
      if (r.done) return;
      yield r.value;
    }
  }
}
