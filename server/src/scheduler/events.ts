// The in-process event bus. Services publish after their transaction commits; the scheduler
// and watchers (WatchRuns, log followers) subscribe. Delivery is synchronous and in-process;
// a PostgreSQL LISTEN/NOTIFY bridge can later forward `publish` to other replicas by
// subscribing here and re-publishing what it receives (events carry only ids, never rows).

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
