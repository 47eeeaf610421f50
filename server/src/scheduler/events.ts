// The in-process event bus. Services publish after their transaction commits; the scheduler
// and watchers (WatchRuns, log followers) subscribe. Delivery is synchronous and in-process;
// on PostgreSQL the replica bridge (replicas.ts) forwards run/job/log events to the other
// replicas and re-publishes theirs here, marked `remote` (events carry only ids, never rows).

export type EventKind = "run" | "job" | "instance" | "fleet" | "log";

export interface DomainEvent {
  kind: EventKind;
  /** Id of the changed row (for "log": the job submission id). */
  id: string;
  /** Owning project, so subscribers can filter without a query. */
  projectId: string;
  /** For "job" events: the run the job belongs to. */
  runId?: string;
  /**
   * Set when a reconciler reports a change it made to its own object (`job:<id>`): it already
   * acted on it, so the scheduler does not wake it again. Watchers still see the event.
   */
  by?: string;
  /** Published by another replica (forwarded over LISTEN/NOTIFY); that replica's scheduler already acted on it. */
  remote?: boolean;
}

export type Listener = (e: DomainEvent) => void;

export class EventBus {
  private readonly listeners = new Set<Listener>();

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  publish(events: DomainEvent | readonly DomainEvent[]): void {
    for (const e of Array.isArray(events) ? events : [events as DomainEvent]) {
      for (const fn of this.listeners) {
        try {
          fn(e);
        } catch (error) {
          // A faulty subscriber must not stop the others from hearing about the change.
          console.error("event listener failed", error);
        }
      }
    }
  }
}
