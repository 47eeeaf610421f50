// Project secrets, encrypted per value. Callers manage names and values but never read a
// value back through the API; plaintext leaves this service only via `resolveForJob`,
// which the scheduler calls when it interpolates `${{ secrets.NAME }}` into a job spec.
import { withTransaction, type Orm } from "../db/database.js";
import { Project, Secret, build } from "../db/entities.js";
import { err } from "../errors.js";
import { DecryptionError, type Encryptor } from "./encryption.js";
import { checkName } from "./names.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";

export interface SecretView {
  name: string;
  createdAt: Date;
  updatedAt: Date;
}

const aad = (projectId: string, name: string) => `secret/${projectId}/${name}`;
const view = (s: Secret): SecretView => ({ name: s.name, createdAt: s.createdAt, updatedAt: s.updatedAt });

export class SecretsService {
  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
    private readonly encryptor: Encryptor,
  ) {}

  async createOrUpdate(actor: Principal, projectName: string, name: string, value: string): Promise<SecretView> {
    checkName("secret", name);
    return withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "secrets.manage");
      const sealed = this.encryptor.encrypt(value, aad(project.id, name));
      let secret = await em.findOne(Secret, { project: project.id, name });
      if (secret) secret.value = sealed;
      else {
        secret = build(Secret, { project: em.getReference(Project, project.id, { wrapped: true }), name, value: sealed });
        em.persist(secret);
      }
      await em.flush();
      return view(secret);
    });
  }

  async list(actor: Principal, projectName: string): Promise<SecretView[]> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "secrets.manage");
    return (await em.find(Secret, { project: project.id }, { orderBy: { name: "asc" } })).map(view);
  }

  async get(actor: Principal, projectName: string, name: string): Promise<SecretView> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "secrets.manage");
    const secret = await em.findOne(Secret, { project: project.id, name });
    if (!secret) throw err("DSTACK_SECRET_NOT_FOUND", { secret: name, project: projectName });
    return view(secret);
  }

  async delete(actor: Principal, projectName: string, names: string[]): Promise<void> {
    await withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "secrets.manage");
      for (const name of names) {
        const secret = await em.findOne(Secret, { project: project.id, name });
        if (!secret) throw err("DSTACK_SECRET_NOT_FOUND", { secret: name, project: projectName });
        em.remove(secret);
      }
    });
  }

  /**
   * Plaintext values of the named secrets of a project, for building a job's environment.
   * System use only (no caller check): the run's submitter was authorized at apply time.
   */
  async resolveForJob(projectId: string, names: readonly string[]): Promise<Record<string, string>> {
    const em = this.orm.em.fork();
    const project = await em.findOneOrFail(Project, { id: projectId });
    const rows = await em.find(Secret, { project: projectId, name: { $in: [...new Set(names)] } });
    const byName = new Map(rows.map((r) => [r.name, r]));
    const out: Record<string, string> = {};
    for (const name of names) {
      const row = byName.get(name);
      if (!row) throw err("DSTACK_SECRET_NOT_FOUND", { secret: name, project: project.name });
      try {
        out[name] = this.encryptor.decrypt(row.value, aad(projectId, name));
      } catch (e) {
        if (e instanceof DecryptionError) throw err("DSTACK_SECRET_DECRYPT_FAILED", { secret: name, project: project.name }, e);
        throw e;
      }
    }
    return out;
  }
}
