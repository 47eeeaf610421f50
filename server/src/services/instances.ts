// Reading instances across a project's fleets (`dstack fleet` details, InstanceService), and
// their idle lifecycle: an instance of a fleet with an idle_duration is terminated once it has
// been idle that long (dstack's DESTROY_AFTER_IDLE), by a scheduler timer armed when it becomes
// idle. Idle time counts from its last job's end, else from its creation; fleets at nodes.min
// keep their instances; backends that cannot release machines keep theirs.
import type { FleetConfig } from "@dstack/proto";
import { InstanceStatus, InstanceTerminationReason } from "../domain/enums.js";
import { withTransaction, type Orm } from "../db/database.js";
import { Fleet, Instance, Job } from "../db/entities.js";
import { err } from "../errors.js";
import { realClock, type Clock } from "../scheduler/clock.js";
import type { EventBus } from "../scheduler/events.js";
import { instanceView, type InstanceView } from "./fleets.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";


/**
 * What a backend can do with its instances. Only a backend that can release its machines
 * (a cloud's VMs) terminates idle ones; the local machine and on-prem hosts (SSH fleets, hosts
 * that joined with a token) are never given back for idleness, as in dstack.
 */
export interface InstanceBackend {
  readonly canTerminate: boolean;
  /** Releases the machine; a throw leaves the instance terminating and it is tried again later. */
  terminate(instance: { id: string; name: string; region: string }): Promise<void>;
}

const KEEP: InstanceBackend = {
  canTerminate: false,
  terminate: () => Promise.reject(new Error("this backend cannot terminate instances")),
};

/** A failed backend termination is tried again after this long. */
export const TERMINATE_RETRY_MS = 30_000;

/** The next time the scheduler should look at an instance, or null for never. */
export interface InstanceProcessResult {
  nextAt: Date | null;
}

type FleetSpec = { configuration?: FleetConfig } | undefined;

/** dstack's default idle_duration for fleets: 3 days. */
export const DEFAULT_FLEET_IDLE_S = 72 * 3600;

export class InstancesService {
  /** Backends by the name instances carry (`Instance.backend`); unknown ones keep their instances. */
  private readonly backends = new Map<string, InstanceBackend>([
    ["local", KEEP],
    ["remote", KEEP],
  ]);

  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
    private readonly bus?: EventBus,
    private readonly clock: Clock = realClock,
  ) {}

  /** Plugs in a backend's capabilities (a cloud backend that can release its instances). */
  useBackend(name: string, backend: InstanceBackend): void {
    this.backends.set(name, backend);
  }

  async list(actor: Principal, projectName: string, opts: { fleetNames?: readonly string[]; onlyActive?: boolean } = {}): Promise<InstanceView[]> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const rows = await em.find(
      Instance,
      {
        project: project.id,
        ...(opts.onlyActive ? { deleted: false, status: { $ne: InstanceStatus.TERMINATED } } : {}),
        ...(opts.fleetNames?.length ? { fleet: { name: { $in: [...opts.fleetNames] } } } : {}),
      },
      { populate: ["fleet"], orderBy: { createdAt: "asc", id: "asc" } },
    );
    return rows.map((i) => instanceView(i, project.name, (i.fleet?.getEntity() as Fleet | undefined)?.name ?? null));
  }

  async get(actor: Principal, projectName: string, id: string): Promise<InstanceView> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const i = await em.findOne(Instance, { project: project.id, id }, { populate: ["fleet"] });
    if (!i) throw err("DSTACK_INSTANCE_NOT_FOUND", { instance: id, project: projectName });
    return instanceView(i, project.name, (i.fleet?.getEntity() as Fleet | undefined)?.name ?? null);
  }

  /** Idle instances a backend could release (of one fleet, or all): the scheduler (re-)arms their idle timers. */
  async idleInstanceIds(fleetId?: string): Promise<string[]> {
    const rows = await this.orm.em
      .fork()
      .find(Instance, { deleted: false, status: { $in: [InstanceStatus.IDLE, InstanceStatus.TERMINATING] }, ...(fleetId ? { fleet: fleetId } : {}) }, { fields: ["id", "backend"] });
    return rows.filter((i) => this.backendOf(i).canTerminate).map((i) => i.id);
  }

  /**
   * The scheduler's look at one instance: terminates it if it has been idle longer than its
   * fleet's idle_duration (and the fleet is above nodes.min), else says when to look again.
   * The claim is a conditional update (idle, no blocks busy), so a placement racing it, or
   * another replica, never loses a job to it.
   */
  async processInstance(id: string): Promise<InstanceProcessResult> {
    const em = this.orm.em.fork();
    const i = await em.findOne(Instance, { id, deleted: false }, { populate: ["fleet"] });
    if (!i) return { nextAt: null };
    const backend = this.backendOf(i);
    if (i.status === InstanceStatus.TERMINATING) return this.release(i, backend);
    if (i.status !== InstanceStatus.IDLE || i.busyBlocks > 0 || !backend.canTerminate || i.remoteConnection) return { nextAt: null };
    const fleet = i.fleet?.getEntity() as Fleet | undefined;
    const config = (fleet?.spec as FleetSpec)?.configuration;
    // SSH fleets are the user's own hosts: never terminated for idleness (dstack: DONT_DESTROY).
    if (config?.sshConfig) return { nextAt: null };
    const idleS = config?.idleDuration ?? DEFAULT_FLEET_IDLE_S;
    if (idleS === "off" || idleS < 0) return { nextAt: null };
    const since = await this.idleSince(i);
    const deadline = new Date(since.getTime() + idleS * 1000);
    const now = this.clock.now();
    if (now < deadline) return { nextAt: deadline };
    const idleFor = Math.round((now.getTime() - since.getTime()) / 1000);
    const claimed = await withTransaction(this.orm, async (tx) => {
      if (fleet && config?.nodes) {
        // Touching the fleet row first serializes its instances' idle terminations (a row lock
        // on PostgreSQL, the write lock on SQLite), so two of them never both go below nodes.min.
        await tx.nativeUpdate(Fleet, { id: fleet.id }, { updatedAt: now });
        const live = await tx.count(Instance, { fleet: fleet.id, deleted: false, status: { $nin: [InstanceStatus.TERMINATING, InstanceStatus.TERMINATED] } });
        // At nodes.min: keep it (no terminate-then-provision loop). A new job or node re-arms it.
        if (live <= config.nodes.min) return 0;
      }
      return tx.nativeUpdate(
        Instance,
        { id, deleted: false, status: InstanceStatus.IDLE, busyBlocks: 0 },
        { status: InstanceStatus.TERMINATING, terminationReason: InstanceTerminationReason.IDLE_TIMEOUT, terminationReasonMessage: `Instance idle for ${idleFor}s`, updatedAt: now },
      );
    });
    if (claimed === 0) return { nextAt: null }; // at nodes.min, or a job took it meanwhile (its end re-arms the timer)
    this.bus?.publish({ kind: "instance", id, projectId: i.project.id });
    return this.release(i, backend);
  }

  /** A terminating instance: the backend releases the machine, then the instance is gone. */
  private async release(i: Instance, backend: InstanceBackend): Promise<InstanceProcessResult> {
    if (!backend.canTerminate) return { nextAt: null };
    try {
      await backend.terminate({ id: i.id, name: i.name, region: i.region ?? "" });
    } catch {
      return { nextAt: new Date(this.clock.now().getTime() + TERMINATE_RETRY_MS) };
    }
    const now = this.clock.now();
    await this.orm.em.fork().nativeUpdate(Instance, { id: i.id, status: InstanceStatus.TERMINATING }, { status: InstanceStatus.TERMINATED, deleted: true, updatedAt: now });
    this.bus?.publish({ kind: "instance", id: i.id, projectId: i.project.id });
    return { nextAt: null };
  }

  /** When the instance last became idle: its latest job's end, else its creation. */
  private async idleSince(i: Instance): Promise<Date> {
    const last = await this.orm.em.fork().findOne(Job, { instance: i.id, finishedAt: { $ne: null } }, { orderBy: { finishedAt: "desc" }, fields: ["finishedAt"] });
    const end = last?.finishedAt ?? null;
    return end && end > i.createdAt ? end : i.createdAt;
  }

  private backendOf(i: Pick<Instance, "backend">): InstanceBackend {
    return this.backends.get(i.backend ?? "remote") ?? KEEP;
  }
}
