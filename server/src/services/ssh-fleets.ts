// The database side of SSH fleets (backends/ssh/provisioner.ts does the SSH work): which hosts
// a fleet has, one instance per host with its `remoteConnection` (how the host is reached, where
// its shim is installed, how far provisioning got), and the per-host outcome on the instance.
import type { FleetConfig } from "@dstack/proto";
import { InstanceStatus, InstanceTerminationReason } from "../domain/enums.js";
import { withTransaction, type Orm } from "../db/database.js";
import { Fleet, Instance, Project, build } from "../db/entities.js";
import { err } from "../errors.js";
import type { EventBus } from "../scheduler/events.js";

/** What an SSH fleet instance records about its host (instances.remote_connection). */
export interface RemoteConnection {
  /** `user@hostname:port`: the host's identity within the fleet. */
  host: string;
  hostname: string;
  port: number;
  user: string;
  /** Where the bundles, the shim's home and its scripts live on the host. */
  installDir?: string;
  /** The systemd unit, when the shim runs under systemd; else a restart loop under nohup. */
  unit?: string;
  /** provisioning: being installed; installed: the shim was started; removed: uninstalled. */
  state: "provisioning" | "installed" | "removed";
}

export interface SshInstanceState {
  id: string;
  name: string;
  status: InstanceStatus;
  deleted: boolean;
  remote: RemoteConnection;
}

export interface SshFleetState {
  id: string;
  projectId: string;
  name: string;
  deleted: boolean;
  config: FleetConfig;
  /** Every instance of the fleet with a remote connection, deleted ones included. */
  instances: SshInstanceState[];
}

const configOf = (f: Pick<Fleet, "spec">): FleetConfig => (f.spec as { configuration: FleetConfig }).configuration;

export class SshFleetsService {
  constructor(
    private readonly orm: Orm,
    private readonly bus: EventBus,
  ) {}

  /** Ids of fleets that have (or had) SSH hosts: live SSH fleets, and deleted ones whose hosts are not yet cleaned. */
  async fleetIds(): Promise<string[]> {
    const em = this.orm.em.fork();
    const fleets = await em.find(Fleet, {}, { fields: ["id", "spec", "deleted"] });
    const out: string[] = [];
    for (const f of fleets) {
      if (!configOf(f)?.sshConfig) continue;
      if (!f.deleted) out.push(f.id);
      else if ((await this.state(f.id))?.instances.some((i) => i.remote.state !== "removed")) out.push(f.id);
    }
    return out;
  }

  async state(fleetId: string): Promise<SshFleetState | null> {
    const em = this.orm.em.fork();
    const f = await em.findOne(Fleet, { id: fleetId });
    if (!f) return null;
    const rows = await em.find(Instance, { fleet: f.id, remoteConnection: { $ne: null } }, { orderBy: { instanceNum: "asc" } });
    return {
      id: f.id,
      projectId: f.project.id,
      name: f.name,
      deleted: f.deleted,
      config: configOf(f),
      instances: rows.map((i) => ({ id: i.id, name: i.name, status: i.status, deleted: i.deleted, remote: i.remoteConnection as unknown as RemoteConnection })),
    };
  }

  /** A new provisioning instance for a host of a live fleet. */
  async addHost(fleetId: string, remote: RemoteConnection): Promise<SshInstanceState> {
    const out = await withTransaction(this.orm, async (em) => {
      const fleet = await em.findOne(Fleet, { id: fleetId, deleted: false });
      if (!fleet) throw err("DSTACK_FLEET_NOT_FOUND", { fleet: fleetId, project: "?" });
      const num = await em.count(Instance, { fleet: fleet.id });
      const i = build(Instance, {
        fleet: em.getReference(Fleet, fleet.id, { wrapped: true }),
        project: em.getReference(Project, fleet.project.id, { wrapped: true }),
        name: `${fleet.name}-${num}`,
        instanceNum: num,
        status: InstanceStatus.PROVISIONING,
        backend: "remote",
        region: "remote",
        price: 0,
        remoteConnection: remote as unknown as Record<string, unknown>,
      });
      em.persist(i);
      await em.flush();
      return { state: { id: i.id, name: i.name, status: i.status, deleted: false, remote }, projectId: fleet.project.id };
    });
    this.bus.publish({ kind: "instance", id: out.state.id, projectId: out.projectId });
    return out.state;
  }

  /**
   * Records provisioning progress. `failed` ends the instance with an error (kept in the fleet
   * so its message shows; a re-apply retries the host); `retry` makes a failed one provisioning again.
   */
  async update(instanceId: string, remote: RemoteConnection, o: { failed?: string; retry?: boolean; retire?: boolean } = {}): Promise<void> {
    const projectId = await withTransaction(this.orm, async (em) => {
      const i = await em.findOne(Instance, { id: instanceId });
      if (!i) return null;
      i.remoteConnection = remote as unknown as Record<string, unknown>;
      if (o.failed !== undefined) {
        i.status = InstanceStatus.TERMINATED;
        i.terminationReason = InstanceTerminationReason.ERROR;
        i.terminationReasonMessage = o.failed;
      } else if (o.retry) {
        i.status = InstanceStatus.PROVISIONING;
        i.terminationReason = null;
        i.terminationReasonMessage = null;
      }
      if (o.retire) {
        i.status = InstanceStatus.TERMINATED;
        i.terminationReason ??= InstanceTerminationReason.TERMINATED_BY_USER;
        i.deleted = true;
      }
      await em.flush();
      return i.project.id;
    });
    if (projectId) this.bus.publish({ kind: "instance", id: instanceId, projectId });
  }
}
