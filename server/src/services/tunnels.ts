// Tunnels to a run's job (`ssh <run>`, port forwards): who may open one, which job and instance it
// reaches, and opening it through the mesh. The mesh's TunnelBroker does the opening; it is handed
// in once the agent port is up (`useOpener`), so this service does not depend on the mesh module.
import type { Duplex } from "node:stream";
import { JobStatus, enumName } from "../domain/enums.js";
import type { Orm } from "../db/database.js";
import { Instance, Job, Run } from "../db/entities.js";
import { err } from "../errors.js";
import type { ProjectOperation } from "../auth/permissions.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";

/** What opens a byte tunnel to an agent (the mesh's TunnelBroker satisfies it). */
export interface TunnelOpener {
  open(o: { instanceId: string; target: "ssh" | "container-port"; taskId?: string; port?: number; signal?: AbortSignal }): Promise<Duplex>;
}

export interface RunTunnelRequest {
  projectName: string;
  runName: string;
  replicaNum: number;
  jobNum: number;
  /** The job's SSH server, or a TCP port of its container. */
  target: "ssh" | "port";
  /** For `port`: 1-65535. */
  port?: number;
  /** Aborting while opening gives up (the client went away). */
  signal?: AbortSignal;
}

/** The job a tunnel reaches. */
export interface TunnelEndpoint {
  runName: string;
  jobSubmissionId: string;
  instanceId: string;
  instanceName: string;
}

export interface OpenedTunnel extends TunnelEndpoint {
  tunnel: Duplex;
}

export class TunnelsService {
  private opener: TunnelOpener | null = null;

  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
  ) {}

  /** Sets what opens tunnels (the agent port's broker). Until then, opening fails with Unavailable. */
  useOpener(opener: TunnelOpener): void {
    this.opener = opener;
  }

  /**
   * The running job a tunnel may reach: the caller must be a member of the project, the run must
   * exist, and the latest submission of (replica, job) must be running on an instance. Other
   * features that reach a running job (`dstack metrics`) share it: `use` names their permission and
   * what the "not running" error says needs the run.
   */
  async resolve(
    actor: Principal,
    r: Pick<RunTunnelRequest, "projectName" | "runName" | "replicaNum" | "jobNum">,
    use: { operation: ProjectOperation; need: string } = { operation: "runs.apply", need: "ssh and port forwarding need" },
  ): Promise<TunnelEndpoint> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, r.projectName, use.operation);
    const run = await em.findOne(Run, { project: project.id, runName: r.runName, deleted: false }, { orderBy: { submittedAt: "desc" } });
    if (!run) throw err("DSTACK_RUN_NOT_FOUND", { run: r.runName, project: r.projectName });
    const job = await em.findOne(Job, { run: run.id, replicaNum: r.replicaNum, jobNum: r.jobNum }, { orderBy: { submissionNum: "desc" } });
    if (!job) throw err("DSTACK_JOB_NOT_FOUND", { job: `${r.runName} replica ${r.replicaNum} job ${r.jobNum}` });
    if (job.status !== JobStatus.RUNNING || !job.instance) {
      throw err("DSTACK_RUN_NOT_RUNNING", { run: r.runName, status: enumName(JobStatus, job.status), need: use.need });
    }
    const instance = await em.findOne(Instance, { id: job.instance.id });
    return { runName: run.runName, jobSubmissionId: job.id, instanceId: job.instance.id, instanceName: instance?.name ?? job.instance.id };
  }

  /** Authorizes, then asks the job's host agent for a tunnel to the target; resolves once bytes can flow. */
  async open(actor: Principal, r: RunTunnelRequest): Promise<OpenedTunnel> {
    return this.openTo(await this.resolve(actor, r), r);
  }

  /** Asks the host agent of an already resolved (and authorized) job for a tunnel to the target. */
  async openTo(where: TunnelEndpoint, r: Pick<RunTunnelRequest, "target" | "port" | "signal">): Promise<OpenedTunnel> {
    const fail = (reason: string) => err("DSTACK_TUNNEL_FAILED", { run: where.runName, instance: where.instanceName, reason });
    if (!this.opener) throw fail("this server has no agent port");
    try {
      const tunnel = await this.opener.open({
        instanceId: where.instanceId,
        target: r.target === "ssh" ? "ssh" : "container-port",
        taskId: where.jobSubmissionId,
        ...(r.target === "port" ? { port: r.port } : {}),
        signal: r.signal,
      });
      return { ...where, tunnel };
    } catch (e) {
      throw fail(e instanceof Error ? ("rawMessage" in e ? String(e.rawMessage) : e.message) : String(e));
    }
  }
}
