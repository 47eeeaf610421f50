// The in-server service proxy (dstack's default when no gateway serves a service):
// `<server>/proxy/services/<project>/<run>/…` reaches a running replica's port through the mesh.
// This decides who may call which service and picks the replica; the HTTP handling is in
// api/service-proxy.ts.
import type { RunConfig } from "@dstack/proto";
import { JobStatus, RunStatus, enumName } from "../domain/enums.js";
import type { Orm } from "../db/database.js";
import { Job, Project, Run } from "../db/entities.js";
import { err } from "../errors.js";
import type { ProjectsService } from "./projects.js";
import type { StoredJobSpec } from "./runs.js";
import type { OpenedTunnel, TunnelsService } from "./tunnels.js";
import type { UsersService } from "./users.js";
import type { RequestStats } from "./autoscaler.js";

export interface ServiceTarget {
  runName: string;
  /** The configuration's `strip_prefix` (default true): the upstream sees `/…` instead of the proxy path. */
  stripPrefix: boolean;
  /** The caller's token was checked (`auth` is not false): it is dstack's, not the service's. */
  authChecked: boolean;
}

export class ServiceProxyService {
  constructor(
    private readonly orm: Orm,
    private readonly users: UsersService,
    private readonly projects: ProjectsService,
    private readonly tunnels: TunnelsService,
    /** Counts the requests that reach a replica, for autoscaling. */
    private readonly stats?: RequestStats,
    private readonly random: () => number = Math.random,
  ) {}

  /**
   * The service's settings and a tunnel to one of its running replicas, picked at random as dstack
   * does. Unless the configuration says `auth: false`, `authorization` must carry the token of a
   * member of the project.
   */
  async open(projectName: string, runName: string, authorization: string | undefined, signal?: AbortSignal): Promise<ServiceTarget & { tunnel: OpenedTunnel }> {
    const em = this.orm.em.fork();
    const project = await em.findOne(Project, { name: projectName, deleted: false });
    const run = project ? await em.findOne(Run, { project: project.id, runName, deleted: false }, { orderBy: { submittedAt: "desc" } }) : null;
    const config = (run?.runSpec as { configuration?: RunConfig } | undefined)?.configuration;
    if (!run || config?.type !== "service") throw err("DSTACK_SERVICE_NOT_FOUND", { run: runName, project: projectName });
    if (config.auth !== false) {
      const user = await this.users.authenticate(authorization);
      await this.projects.authorize(em, user, projectName, "runs.list");
    }
    this.stats?.record(run.id);
    // A running submission is its replica's latest (a retry starts only after the last one ended).
    const running = await em.find(Job, { run: run.id, jobNum: 0, status: JobStatus.RUNNING, instance: { $ne: null } });
    if (!running.length) throw err("DSTACK_SERVICE_NO_REPLICA", { run: runName, status: enumName(RunStatus, run.status) });
    const job = running[Math.floor(this.random() * running.length)]!;
    const port = (job.jobSpec as unknown as StoredJobSpec).ports[0] ?? config.port.containerPort;
    const tunnel = await this.tunnels.openTo(
      { runName, jobSubmissionId: job.id, instanceId: job.instance!.id, instanceName: job.instance!.id },
      { target: "port", port, ...(signal ? { signal } : {}) },
    );
    return { runName, stripPrefix: config.stripPrefix !== false, authChecked: config.auth !== false, tunnel };
  }
}
