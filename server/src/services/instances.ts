// Reading instances across a project's fleets (`dstack fleet` details, InstanceService).
import { InstanceStatus } from "../domain/enums.js";
import type { Orm } from "../db/database.js";
import { Fleet, Instance } from "../db/entities.js";
import { err } from "../errors.js";
import { instanceView, type InstanceView } from "./fleets.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";

export class InstancesService {
  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
  ) {}

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
}
