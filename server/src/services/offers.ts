// Offers: which of a project's fleet instances can host a job with given resource
// requirements, and on how many blocks. The matching is pure (tested as a table) and is
// shared by the plan, `dstack offer` and the scheduler's placement, so what the plan shows
// is what the scheduler does.
import type { GpuVendor, Range, ResourceRequirements } from "@dstack/proto";
import { InstanceStatus } from "../domain/enums.js";
import type { Em, Orm } from "../db/database.js";
import { Fleet, Instance } from "../db/entities.js";
import { err } from "../errors.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";

export interface GpuInfo {
  vendor: GpuVendor;
  name: string;
  /** Memory per GPU, GB. */
  memoryGb: number;
}

/** What a host reports when its shim joins (and what tests use to simulate one). */
export interface HostInfo {
  cpus: number;
  cpuArch?: "x86" | "arm";
  memoryGb: number;
  diskGb: number;
  gpus: GpuInfo[];
  hostname?: string;
  internalIp?: string;
}

export type OfferAvailability = "available" | "idle" | "busy";

export interface InstanceResources {
  cpus: number;
  cpuArch: "x86" | "arm";
  memoryGb: number;
  diskGb: number;
  gpus: GpuInfo[];
}

export interface OfferView {
  fleetName: string;
  instanceId: string;
  instanceName: string;
  backend: string;
  region: string;
  /** The resources of the blocks offered (the whole host when blocks == totalBlocks). */
  resources: InstanceResources;
  price: number;
  availability: OfferAvailability;
  /** Blocks the job would take. */
  blocks: number;
  totalBlocks: number;
}

export const inRange = (v: number, r: Range | undefined): boolean =>
  r === undefined || ((r.min === undefined || v >= r.min - 1e-9) && (r.max === undefined || v <= r.max + 1e-9));

/** Total blocks a host splits into: `auto` = one per GPU (or per CPU without GPUs). */
export function resolveBlocks(blocks: number | "auto" | undefined, host: HostInfo): number {
  if (blocks === undefined) return 1;
  if (blocks === "auto") return Math.max(1, host.gpus.length > 0 ? host.gpus.length : host.cpus);
  return Math.max(1, Math.floor(blocks));
}

/** The resources of `k` of a host's `total` equal blocks; disk is shared, not divided. */
export function blockResources(host: HostInfo, total: number, k: number): InstanceResources {
  const gpusPer = Math.floor(host.gpus.length / total);
  return {
    cpus: Math.floor(host.cpus / total) * k,
    cpuArch: host.cpuArch ?? "x86",
    memoryGb: (host.memoryGb / total) * k,
    diskGb: host.diskGb,
    gpus: host.gpus.slice(0, gpusPer * k),
  };
}

/** Whether concrete resources satisfy requirements. */
export function fits(res: InstanceResources, req: ResourceRequirements): boolean {
  if (req.cpu.arch !== undefined && req.cpu.arch !== res.cpuArch) return false;
  if (!inRange(res.cpus, req.cpu.count)) return false;
  if (!inRange(res.memoryGb, req.memory)) return false;
  if (!inRange(res.diskGb, req.disk.size)) return false;
  const g = req.gpu;
  if (!inRange(res.gpus.length, g.count)) return false;
  if (res.gpus.length === 0) return true;
  // Asking for no GPU at all (count 0..0) already failed above on a GPU host.
  for (const gpu of res.gpus) {
    if (g.vendor !== undefined && gpu.vendor !== g.vendor) return false;
    if (g.names !== undefined && !g.names.some((n) => n.toLowerCase() === gpu.name.toLowerCase())) return false;
    if (!inRange(gpu.memoryGb, g.memory)) return false;
  }
  if (g.totalMemory !== undefined && !inRange(res.gpus.reduce((s, x) => s + x.memoryGb, 0), g.totalMemory)) return false;
  return true;
}

/**
 * The fewest blocks (1..free) of a host that satisfy the requirements, or null. A job of a
 * multi-node replica takes whole hosts. GPU requirements without GPUs (count `0..`) let a
 * job run on any block.
 */
export function blocksNeeded(host: HostInfo, total: number, free: number, req: ResourceRequirements, wholeHost = false): number | null {
  if (wholeHost) return free === total && fits(blockResources(host, total, total), req) ? total : null;
  for (let k = 1; k <= free; k++) if (fits(blockResources(host, total, k), req)) return k;
  return null;
}

export interface OfferQuery {
  resources: ResourceRequirements;
  /** Only instances of these fleets (by name); empty/undefined = any. */
  fleets?: readonly string[];
  maxPrice?: number;
  /** Include busy instances (their whole-block offers), as `--unallocated`/full offers. */
  includeBusy?: boolean;
  wholeHost?: boolean;
}

/** The parts of an instance row that matching needs (an entity, or a raw row mapped to this). */
export type InstanceLike = Pick<Instance, "id" | "name" | "price" | "busyBlocks" | "totalBlocks" | "hostInfo" | "backend" | "region" | "createdAt">;

export interface InstanceCandidate {
  instance: InstanceLike;
  fleetName: string;
}

const AVAILABILITY_ORDER: Record<OfferAvailability, number> = { idle: 0, available: 1, busy: 2 };

/** Offers from candidate instances, sorted as dstack shows them: usable first, then cheapest, then smallest. */
export function offersFrom(candidates: readonly InstanceCandidate[], q: OfferQuery): OfferView[] {
  const out: OfferView[] = [];
  for (const { instance, fleetName } of candidates) {
    const host = instance.hostInfo as HostInfo | null;
    if (!host) continue;
    if (q.fleets?.length && !q.fleets.includes(fleetName)) continue;
    const price = instance.price ?? 0;
    if (q.maxPrice !== undefined && price > q.maxPrice) continue;
    const free = instance.totalBlocks - instance.busyBlocks;
    let k = blocksNeeded(host, instance.totalBlocks, free, q.resources, q.wholeHost);
    let availability: OfferAvailability = instance.busyBlocks === 0 ? "idle" : "available";
    if (k === null) {
      if (!q.includeBusy) continue;
      k = blocksNeeded(host, instance.totalBlocks, instance.totalBlocks, q.resources, q.wholeHost);
      if (k === null) continue;
      availability = "busy";
    }
    out.push({
      fleetName,
      instanceId: instance.id,
      instanceName: instance.name,
      backend: instance.backend ?? "remote",
      region: instance.region ?? "",
      resources: blockResources(host, instance.totalBlocks, k),
      price: (price * k) / instance.totalBlocks,
      availability,
      blocks: k,
      totalBlocks: instance.totalBlocks,
    });
  }
  return out.sort(
    (a, b) =>
      AVAILABILITY_ORDER[a.availability] - AVAILABILITY_ORDER[b.availability] ||
      a.price - b.price ||
      a.resources.gpus.length - b.resources.gpus.length ||
      a.resources.cpus - b.resources.cpus ||
      a.resources.memoryGb - b.resources.memoryGb ||
      a.instanceName.localeCompare(b.instanceName),
  );
}

/** What `dstack offer --group-by` groups GPU offers by, besides the GPU itself (always implied). */
export type OfferGroupDim = "backend" | "region" | "count";

/** GPU offers of one kind (name, memory, vendor), aggregated over the other group-by dimensions. */
export interface GpuGroupView {
  name: string;
  memoryGb: number;
  vendor: GpuVendor;
  countMin: number;
  countMax: number;
  /** Price per GPU (an offer's price over its GPU count), USD per hour. */
  priceMin: number;
  priceMax: number;
  /** The group's backend when grouped by backend, else every backend it spans. */
  backends: string[];
  /** The group's region when grouped by region; the backend's regions when grouped by backend only; else empty. */
  regions: string[];
  /** The best availability in the group. */
  availability: OfferAvailability;
  spot: boolean;
}

/**
 * dstack's GPU grouping (`dstack offer --group-by gpu[,backend[,region]][,count]`): offers without
 * GPUs drop out; each offer counts once per GPU kind it carries, with that kind's count; groups
 * are keyed by the GPU kind plus the chosen dimensions, and sorted usable first, then by per-GPU
 * price, then by the dimensions. Regions need the backend (a region name means nothing alone).
 */
export function groupGpuOffers(offers: readonly OfferView[], by: ReadonlySet<OfferGroupDim>): GpuGroupView[] {
  if (by.has("region") && !by.has("backend")) throw err("DSTACK_BAD_OFFER_GROUP_BY", { reason: "cannot group by 'region' without also grouping by 'backend'" });
  // Every region a backend offers in (GPU offers or not), shown when grouping by backend alone.
  const backendRegions = new Map<string, Set<string>>();
  for (const o of offers) {
    let r = backendRegions.get(o.backend);
    if (!r) backendRegions.set(o.backend, (r = new Set()));
    if (o.region) r.add(o.region);
  }
  const groups = new Map<string, GpuGroupView>();
  for (const o of offers) {
    const kinds = new Map<string, { gpu: GpuInfo; count: number }>();
    for (const g of o.resources.gpus) {
      const k = `${g.name}\0${g.memoryGb}\0${g.vendor}`;
      const cur = kinds.get(k);
      if (cur) cur.count++;
      else kinds.set(k, { gpu: g, count: 1 });
    }
    for (const [kind, { gpu, count }] of kinds) {
      const key = [kind, by.has("backend") ? o.backend : "", by.has("region") ? o.region : "", by.has("count") ? count : ""].join("\0");
      const perGpu = o.price / count;
      const g = groups.get(key);
      if (!g) {
        groups.set(key, {
          name: gpu.name,
          memoryGb: gpu.memoryGb,
          vendor: gpu.vendor,
          countMin: count,
          countMax: count,
          priceMin: perGpu,
          priceMax: perGpu,
          backends: [o.backend],
          regions: by.has("region") ? [o.region] : by.has("backend") ? [...(backendRegions.get(o.backend) ?? [])].sort() : [],
          availability: o.availability,
          spot: false,
        });
        continue;
      }
      g.countMin = Math.min(g.countMin, count);
      g.countMax = Math.max(g.countMax, count);
      g.priceMin = Math.min(g.priceMin, perGpu);
      g.priceMax = Math.max(g.priceMax, perGpu);
      if (!g.backends.includes(o.backend)) g.backends.push(o.backend);
      if (AVAILABILITY_ORDER[o.availability] < AVAILABILITY_ORDER[g.availability]) g.availability = o.availability;
    }
  }
  const usable = (g: GpuGroupView) => (g.availability === "busy" ? 1 : 0);
  return [...groups.values()].sort(
    (a, b) =>
      usable(a) - usable(b) ||
      a.priceMin - b.priceMin ||
      a.priceMax - b.priceMax ||
      (by.has("backend") ? a.backends[0]!.localeCompare(b.backends[0]!) : 0) ||
      (by.has("region") ? a.regions[0]!.localeCompare(b.regions[0]!) : 0) ||
      (by.has("count") ? a.countMin - b.countMin : 0) ||
      a.name.localeCompare(b.name) ||
      a.memoryGb - b.memoryGb,
  );
}

export class OffersService {
  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
  ) {}

  /** Instances of a project's live fleets that could take work. */
  async candidates(projectId: string, em = this.orm.em.fork()): Promise<InstanceCandidate[]> {
    const instances = await em.find(
      Instance,
      { project: projectId, deleted: false, unreachable: false, status: { $in: [InstanceStatus.IDLE, InstanceStatus.BUSY] }, fleet: { deleted: false } },
      { populate: ["fleet"], orderBy: { createdAt: "asc", id: "asc" } },
    );
    return instances.map((instance) => ({ instance, fleetName: (instance.fleet?.getEntity() as Fleet | undefined)?.name ?? "" }));
  }

  /**
   * The same candidates read as raw rows (the scheduler's hot path: hydrating every instance
   * entity for every placement cost more than the query). `onlyFree` skips full instances.
   */
  async candidatesRaw(em: Em, projectId: string, onlyFree: boolean): Promise<InstanceCandidate[]> {
    const qb = em
      .createQueryBuilder(Instance, "i")
      .select(["i.id", "i.name", "i.price", "i.busy_blocks", "i.total_blocks", "i.host_info", "i.backend", "i.region", "i.created_at", "f.name as fleet_name"])
      .join("i.fleet", "f")
      .where({ project: projectId, deleted: false, unreachable: false, status: { $in: [InstanceStatus.IDLE, InstanceStatus.BUSY] }, fleet: { deleted: false } });
    if (onlyFree) qb.andWhere("i.busy_blocks < i.total_blocks");
    const rows = (await qb.orderBy({ createdAt: "asc", id: "asc" }).execute("all", false)) as unknown as Record<string, unknown>[];
    return rows.map((r) => ({
      fleetName: String(r.fleet_name),
      instance: {
        id: String(r.id),
        name: String(r.name),
        price: r.price === null ? null : Number(r.price),
        busyBlocks: Number(r.busy_blocks),
        totalBlocks: Number(r.total_blocks),
        hostInfo: (typeof r.host_info === "string" ? JSON.parse(r.host_info) : r.host_info) as Record<string, unknown> | null,
        backend: (r.backend as string | null) ?? null,
        region: (r.region as string | null) ?? null,
        createdAt: r.created_at instanceof Date ? r.created_at : new Date(Number(r.created_at)),
      },
    }));
  }

  /** `dstack offer` / the plan: offers in a project, truncated to `maxOffers`. */
  async list(actor: Principal, projectName: string, q: OfferQuery & { maxOffers?: number }): Promise<{ offers: OfferView[]; total: number }> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    const all = offersFrom(await this.candidates(project.id, em), q);
    return { offers: all.slice(0, q.maxOffers || 50), total: all.length };
  }

  /** `dstack offer --group-by`: every matching offer (not truncated), grouped by GPU kind and `by`. */
  async listGpuGroups(actor: Principal, projectName: string, q: OfferQuery, by: ReadonlySet<OfferGroupDim>): Promise<GpuGroupView[]> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.list");
    return groupGpuOffers(offersFrom(await this.candidates(project.id, em), q), by);
  }
}
