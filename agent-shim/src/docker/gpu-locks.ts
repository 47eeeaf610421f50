// GPU locks: each GPU serves one task at a time. The executor takes them before it creates a
// container and gives them back on every way out (failure, exit, terminate, remove).
import { LinkErrorCode } from "@dstack/proto/agent";
import { LinkCallError } from "@dstack/proto/link";

export type GpuVendorName = "nvidia" | "amd" | "intel" | "tenstorrent" | "other";

/** A GPU the executor can hand to a container. */
export interface ExecutorGpu {
  /** What the container runtime needs: the NVIDIA "GPU-…" UUID, or the AMD render node path. */
  id: string;
  vendor: GpuVendorName;
}

export class GpuLocks {
  private readonly owner = new Map<string, string>(); // gpu id → task id

  constructor(readonly gpus: readonly ExecutorGpu[]) {}

  /** Ids of GPUs no task holds, in discovery order. */
  free(): string[] {
    return this.gpus.filter((g) => !this.owner.has(g.id)).map((g) => g.id);
  }

  held(taskId: string): string[] {
    return this.gpus.filter((g) => this.owner.get(g.id) === taskId).map((g) => g.id);
  }

  /**
   * Locks `count` free GPUs for a task (-1 = all of the host's, 0 = none). Throws
   * RESOURCE_EXHAUSTED, taking nothing, when too few are free.
   */
  acquire(taskId: string, count: number): string[] {
    if (count === 0) return [];
    const already = this.held(taskId);
    if (already.length > 0) return already; // idempotent for a task that holds its share
    const free = this.free();
    if (count < 0) {
      if (this.gpus.length === 0) throw new LinkCallError("the task asks for all GPUs but this host has none", LinkErrorCode.RESOURCE_EXHAUSTED);
      if (free.length < this.gpus.length) {
        throw new LinkCallError(`the task asks for all ${this.gpus.length} GPUs but ${this.gpus.length - free.length} are in use by other tasks`, LinkErrorCode.RESOURCE_EXHAUSTED);
      }
    } else if (free.length < count) {
      throw new LinkCallError(
        `the task asks for ${count} GPU(s) but only ${free.length} of ${this.gpus.length} are free`,
        LinkErrorCode.RESOURCE_EXHAUSTED,
      );
    }
    const take = count < 0 ? free : free.slice(0, count);
    for (const id of take) this.owner.set(id, taskId);
    return take;
  }

  /** Re-locks GPUs a recovered container holds; ids this host no longer has are ignored. */
  restore(taskId: string, ids: readonly string[]): string[] {
    const known = new Set(this.gpus.map((g) => g.id));
    const got: string[] = [];
    for (const id of ids) {
      if (!known.has(id)) continue;
      this.owner.set(id, taskId);
      got.push(id);
    }
    return got;
  }

  release(taskId: string): void {
    for (const [id, t] of this.owner) if (t === taskId) this.owner.delete(id);
  }

  vendorOf(ids: readonly string[]): GpuVendorName | null {
    const g = this.gpus.find((x) => ids.includes(x.id));
    return g ? g.vendor : null;
  }
}
