// Fleets and their instances. A fleet is a record of the user's FleetConfig; its instances
// appear when a host joins (`registerInstance`, called by the mesh when a shim enrolls, and
// by tests to simulate hosts) with a join token issued here (`createJoinToken`). Deleting a
// fleet with running jobs is refused; deleting one revokes its join tokens.
import type { FleetConfig } from "@dstack/proto";
import { FleetStatus, InstanceStatus, JobStatus } from "../domain/enums.js";
import { withTransaction, type Em, type Orm } from "../db/database.js";
import { Fleet, Instance, Job, Project, build } from "../db/entities.js";
import { err } from "../errors.js";
import { JoinTokens, revokeFleetTokens } from "../mesh/join-tokens.js";
import type { EventBus } from "../scheduler/events.js";
import type { Clock } from "../scheduler/clock.js";
import { checkName, tombstoneName } from "./names.js";
import { DEFAULT_PROJECT_NAME } from "./projects.js";
import { resolveBlocks, type HostInfo } from "./offers.js";
import type { ProjectsService } from "./projects.js";
import { Batcher } from "./batch.js";
import { sshHostBlocks, sshStatusMessage, withSshHostFacts } from "./ssh-fleets.js";
import type { Principal } from "./users.js";

export interface InstanceView {
  id: string;
  projectName: string;
  name: string;
  fleetId: string | null;
  fleetName: string | null;
  instanceNum: number;
  status: InstanceStatus;
  backend: string;
  region: string;
  price: number;
  hostInfo: HostInfo | null;
  totalBlocks: number;
  busyBlocks: number;
  unreachable: boolean;
  /** Why it ended (e.g. an SSH host that could not be set up), when it did. */
  terminationReasonMessage: string | null;
  /** Progress or a problem in words (SSH hosts: the provisioning step); "" when nothing to say. */
  statusMessage: string;
  /** SSH fleet hosts: `user@hostname:port`. */
  sshHost: string | null;
  createdAt: Date;
}

export interface FleetView {
  id: string;
  name: string;
  projectName: string;
  status: FleetStatus;
  config: FleetConfig;
  createdAt: Date;
  deleted: boolean;
  instances: InstanceView[];
}

/** A fleet join token, and what a host needs besides it to join. */
export interface FleetJoinTokenView {
  /** The secret; shown once. */
  token: string;
  expiresAt: Date;
  /** Hosts that may join with it. */
  maxUses: number;
  /** Where hosts dial (the server's agent URL). */
  agentUrl: string;
  caFingerprintSha256: string;
  /** A command line for the host: `dstack-shim join --server … --token … --ca-sha256 …`. */
  installCommand: string;
}

/** What the server tells hosts to dial and pin; the API layer knows both. */
export interface AgentEndpoint {
  agentUrl: string;
  caFingerprintSha256: string;
}

/** Fleet join tokens live 1 h unless asked otherwise, and at most a year. */
export const DEFAULT_FLEET_TOKEN_TTL_MS = 3600_000;
export const MAX_FLEET_TOKEN_TTL_MS = 365 * 24 * 3600_000;

const shellWord = (w: string) => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'"'"'`)}'`);

/** Name of the embedded fleet that stands for the server's own machine. */
export const LOCAL_FLEET_NAME = "local";

const ACTIVE_JOB_STATUSES = [JobStatus.SUBMITTED, JobStatus.PROVISIONING, JobStatus.PULLING, JobStatus.RUNNING, JobStatus.TERMINATING];

export function instanceView(i: Instance, projectName: string, fleetName: string | null): InstanceView {
  return {
    id: i.id,
    projectName,
    name: i.name,
    fleetId: i.fleet?.id ?? null,
    fleetName,
    instanceNum: i.instanceNum,
    status: i.status,
    backend: i.backend ?? "remote",
    region: i.region ?? "",
    price: i.price ?? 0,
    hostInfo: i.hostInfo as HostInfo | null,
    totalBlocks: i.totalBlocks,
    busyBlocks: i.busyBlocks,
    unreachable: i.unreachable,
    terminationReasonMessage: i.terminationReasonMessage,
    statusMessage: sshStatusMessage(i),
    sshHost: (i.remoteConnection as { host?: string } | null)?.host ?? null,
    createdAt: i.createdAt,
  };
}

function checkHost(fleet: string, h: HostInfo): void {
  const bad = (reason: string) => err("DSTACK_BAD_HOST_INFO", { fleet, reason });
  if (!Number.isInteger(h.cpus) || h.cpus < 1) throw bad("cpus must be a positive integer");
  if (!(h.memoryGb > 0)) throw bad("memoryGb must be positive");
  if (!(h.diskGb >= 0)) throw bad("diskGb must not be negative");
  for (const g of h.gpus) if (!g.name || !(g.memoryGb > 0)) throw bad("every GPU needs a name and memory");
}

export class FleetsService {
  private readonly joinTokens: JoinTokens;

  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
    private readonly bus: EventBus,
    private readonly clock: Clock,
  ) {
    this.joinTokens = new JoinTokens(orm);
  }

  /** Creates the fleet, or updates the spec of the live fleet of the same name. */
  async apply(actor: Principal, projectName: string, config: FleetConfig, name = config.name): Promise<FleetView> {
    if (!name) throw err("DSTACK_INVALID_NAME", { kind: "fleet", name: "", max: 100, allowed: "a name is required for fleets" });
    checkName("project", name); // fleets follow the project name rules (letters, digits, - and _)
    const view = await withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "fleets.apply");
      let fleet = await em.findOne(Fleet, { project: project.id, name, deleted: false });
      const spec = { configuration: { ...config, name } };
      if (fleet) fleet.spec = spec;
      else {
        fleet = build(Fleet, { project: em.getReference(Project, project.id, { wrapped: true }), name, spec, status: FleetStatus.ACTIVE });
        em.persist(fleet);
      }
      await em.flush();
      return this.view(em, fleet, project.name);
    });
    this.bus.publish({ kind: "fleet", id: view.id, projectId: (await this.projectId(projectName)) ?? "" });
    return view;
  }

  async list(actor: Principal, projectName: string, opts: { includeDeleted?: boolean } = {}): Promise<FleetView[]> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const where = opts.includeDeleted ? { project: project.id } : { project: project.id, deleted: false };
    const fleets = await em.find(Fleet, where, { orderBy: { name: "asc", createdAt: "asc" } });
    return Promise.all(fleets.map((f) => this.view(em, f, project.name)));
  }

  async get(actor: Principal, projectName: string, by: { name?: string; id?: string }): Promise<FleetView> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const fleet = by.id
      ? await em.findOne(Fleet, { project: project.id, id: by.id })
      : await em.findOne(Fleet, { project: project.id, name: by.name ?? "", deleted: false });
    if (!fleet) throw err("DSTACK_FLEET_NOT_FOUND", { fleet: by.name ?? by.id ?? "", project: projectName });
    return this.view(em, fleet, project.name);
  }

  /**
   * A token hosts join the live fleet `fleetName` with (project managers and admins): reusable
   * by up to `maxUses` hosts (default 1) until it expires (default 1 h) or the fleet is deleted.
   */
  async createJoinToken(
    actor: Principal,
    projectName: string,
    fleetName: string,
    opts: { ttlMs?: number; maxUses?: number },
    endpoint: AgentEndpoint,
  ): Promise<FleetJoinTokenView> {
    const bad = (reason: string) => err("DSTACK_BAD_JOIN_TOKEN_REQUEST", { reason });
    const ttlMs = opts.ttlMs ?? DEFAULT_FLEET_TOKEN_TTL_MS;
    if (!Number.isFinite(ttlMs) || ttlMs < 1000) throw bad("the TTL must be at least 1 second");
    if (ttlMs > MAX_FLEET_TOKEN_TTL_MS) throw bad("the TTL must be at most 365 days");
    const maxUses = opts.maxUses || 1;
    if (!Number.isInteger(maxUses) || maxUses < 1) throw bad("max uses must be a positive integer");
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "fleets.join-token");
    const fleet = await em.findOne(Fleet, { project: project.id, name: fleetName, deleted: false }, { fields: ["id"] });
    if (!fleet) throw err("DSTACK_FLEET_NOT_FOUND", { fleet: fleetName, project: projectName });
    const { token, expiresAt } = await this.joinTokens.create({ projectId: project.id, fleetId: fleet.id, kind: "shim", reusable: true, maxUses, ttlMs });
    const installCommand = ["dstack-shim", "join", "--server", endpoint.agentUrl, "--token", token, "--ca-sha256", endpoint.caFingerprintSha256].map(shellWord).join(" ");
    return { token, expiresAt, maxUses, agentUrl: endpoint.agentUrl, caFingerprintSha256: endpoint.caFingerprintSha256, installCommand };
  }

  /** Deletes fleets (and terminates their instances, and revokes their join tokens); refused while jobs run on them. */
  async delete(actor: Principal, projectName: string, names: readonly string[]): Promise<void> {
    const events: { id: string; projectId: string }[] = [];
    await withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "fleets.delete");
      for (const name of names) {
        const fleet = await em.findOne(Fleet, { project: project.id, name, deleted: false });
        if (!fleet) throw err("DSTACK_FLEET_NOT_FOUND", { fleet: name, project: projectName });
        const jobs = await em.count(Job, { instance: { fleet: fleet.id }, status: { $in: ACTIVE_JOB_STATUSES } });
        if (jobs > 0) throw err("DSTACK_FLEET_IN_USE", { fleet: name, jobs });
        fleet.deleted = true;
        fleet.status = FleetStatus.TERMINATED;
        fleet.name = tombstoneName(fleet.name, fleet.id);
        await revokeFleetTokens(em, fleet.id);
        for (const i of await em.find(Instance, { fleet: fleet.id, deleted: false })) {
          i.status = InstanceStatus.TERMINATED;
          i.deleted = true;
          events.push({ id: i.id, projectId: project.id });
        }
        events.push({ id: fleet.id, projectId: project.id });
      }
    });
    this.bus.publish(events.map((e) => ({ kind: "instance" as const, ...e })));
  }

  /**
   * A host joined `fleetId`: records it as an idle instance split into the fleet's blocks.
   * System use (the mesh and tests); no caller check.
   */
  async registerInstance(
    fleetId: string,
    host: HostInfo,
    opts: { name?: string; backend?: string; region?: string; price?: number } = {},
  ): Promise<InstanceView> {
    const { view, projectId } = await withTransaction(this.orm, async (em) => {
      const fleet = await em.findOne(Fleet, { id: fleetId, deleted: false }, { populate: ["project"] });
      if (!fleet) throw err("DSTACK_FLEET_NOT_FOUND", { fleet: fleetId, project: "?" });
      checkHost(fleet.name, host);
      const config = (fleet.spec as { configuration?: FleetConfig }).configuration;
      const num = (await em.count(Instance, { fleet: fleet.id })) as number;
      const instance = build(Instance, {
        fleet: em.getReference(Fleet, fleet.id, { wrapped: true }),
        project: em.getReference(Project, fleet.project.id, { wrapped: true }),
        name: opts.name ?? `${fleet.name}-${num}`,
        instanceNum: num,
        status: InstanceStatus.IDLE,
        hostInfo: host as unknown as Record<string, unknown>,
        totalBlocks: resolveBlocks(config?.blocks, host),
        busyBlocks: 0,
        price: opts.price ?? 0,
        backend: opts.backend ?? "remote",
        region: opts.region ?? "",
        lastHeartbeatAt: this.clock.now(),
      });
      em.persist(instance);
      await em.flush();
      return { view: instanceView(instance, fleet.project.getEntity().name, fleet.name), projectId: fleet.project.id };
    });
    // A new host may fit jobs that were waiting for capacity.
    this.bus.publish({ kind: "instance", id: view.id, projectId });
    return view;
  }

  /**
   * A host agent reported its facts: record them in the shape offers read, split the host into
   * the fleet's blocks while nothing runs on it, and make a new (pending) instance usable.
   * Publishes an instance event so jobs waiting for capacity get another look. System use.
   */
  async reportHost(instanceId: string, host: HostInfo): Promise<InstanceView | null> {
    const out = await withTransaction(this.orm, async (em) => {
      const i = await em.findOne(Instance, { id: instanceId, deleted: false }, { populate: ["fleet", "project"] });
      if (!i) return null;
      const fleet = i.fleet?.getEntity() as Fleet | undefined;
      const config = (fleet?.spec as { configuration?: FleetConfig } | undefined)?.configuration;
      const facts = withSshHostFacts(i.remoteConnection, host);
      i.hostInfo = { ...facts } as unknown as Record<string, unknown>;
      if (i.busyBlocks === 0) i.totalBlocks = resolveBlocks(sshHostBlocks(i.remoteConnection) ?? config?.blocks, facts);
      if (i.status === InstanceStatus.PENDING || i.status === InstanceStatus.PROVISIONING) i.status = i.busyBlocks > 0 ? InstanceStatus.BUSY : InstanceStatus.IDLE;
      i.unreachable = false;
      i.lastHeartbeatAt = this.clock.now();
      await em.flush();
      return { view: instanceView(i, i.project.getEntity().name, fleet?.name ?? null), projectId: i.project.id };
    });
    if (!out) return null;
    this.bus.publish({ kind: "instance", id: instanceId, projectId: out.projectId });
    return out.view;
  }

  /** The host agent stopped (or resumed) answering: unreachable instances get no new jobs. System use. */
  async setReachable(instanceId: string, reachable: boolean): Promise<void> {
    const i = await this.reachability.get(instanceId);
    if (!i || i.unreachable === !reachable) return;
    await this.orm.em.fork().nativeUpdate(Instance, { id: instanceId }, { unreachable: !reachable, ...(reachable ? { lastHeartbeatAt: this.clock.now() } : {}) });
    if (reachable) this.bus.publish({ kind: "instance", id: instanceId, projectId: i.projectId });
  }

  /** Every shim link that opens becomes reachable: the instances that do so together are read in one query. */
  private readonly reachability = new Batcher<string, { projectId: string; unreachable: boolean } | null>(async (ids) => {
    const rows = await this.orm.em.fork().find(Instance, { id: { $in: ids }, deleted: false }, { fields: ["id", "project", "unreachable"] });
    return new Map(rows.map((i) => [i.id, { projectId: i.project.id, unreachable: i.unreachable }]));
  }, null);

  /**
   * The embedded `local` fleet of the default project with its one instance (this machine),
   * created on first use and kept across restarts. The instance stays pending until the local
   * host agent reports its facts. System use.
   */
  async ensureLocalFleet(projectName = DEFAULT_PROJECT_NAME, fleetName = LOCAL_FLEET_NAME): Promise<{ projectId: string; fleetId: string; instanceId: string; created: boolean }> {
    const out = await withTransaction(this.orm, async (em) => {
      const project = await em.findOne(Project, { name: projectName, deleted: false });
      if (!project) throw err("DSTACK_PROJECT_NOT_FOUND", { project: projectName });
      let fleet = await em.findOne(Fleet, { project: project.id, name: fleetName, deleted: false });
      let created = false;
      if (!fleet) {
        const configuration: FleetConfig = { type: "fleet", name: fleetName, placement: "any", blocks: "auto", env: { values: {}, fromCli: [] }, spotPolicy: "on-demand", idleDuration: "off" };
        fleet = build(Fleet, { project: em.getReference(Project, project.id, { wrapped: true }), name: fleetName, spec: { configuration }, status: FleetStatus.ACTIVE });
        em.persist(fleet);
        created = true;
      }
      let instance = await em.findOne(Instance, { fleet: fleet.id, deleted: false }, { orderBy: { instanceNum: "asc" } });
      if (!instance) {
        const num = await em.count(Instance, { fleet: fleet.id });
        instance = build(Instance, {
          fleet: em.getReference(Fleet, fleet.id, { wrapped: true }),
          project: em.getReference(Project, project.id, { wrapped: true }),
          name: `${fleetName}-${num}`,
          instanceNum: num,
          status: InstanceStatus.PENDING,
          backend: "local",
          region: "",
          price: 0,
        });
        em.persist(instance);
        created = true;
      }
      await em.flush();
      return { projectId: project.id, fleetId: fleet.id, instanceId: instance.id, created };
    });
    if (out.created) this.bus.publish({ kind: "fleet", id: out.fleetId, projectId: out.projectId });
    return out;
  }

  private async projectId(name: string): Promise<string | null> {
    return (await this.orm.em.fork().findOne(Project, { name, deleted: false }, { fields: ["id"] }))?.id ?? null;
  }

  private async view(em: Em, fleet: Fleet, projectName: string): Promise<FleetView> {
    const instances = await em.find(Instance, { fleet: fleet.id, deleted: false }, { orderBy: { instanceNum: "asc" } });
    return {
      id: fleet.id,
      name: fleet.name,
      projectName,
      status: fleet.status,
      config: (fleet.spec as { configuration: FleetConfig }).configuration,
      createdAt: fleet.createdAt,
      deleted: fleet.deleted,
      instances: instances.map((i) => instanceView(i, projectName, fleet.name)),
    };
  }
}
