// Projects and memberships, and the one place project access is decided (`authorize`).
// A caller without access gets PermissionDenied whether or not the project exists, so
// names of other people's private projects do not leak; listing shows only what they may see.
import ssh2 from "ssh2";
import { GlobalRole, ProjectRole, enumName } from "../domain/enums.js";
import { withTransaction, type Em, type Orm } from "../db/database.js";
import { Member, Project, User, build } from "../db/entities.js";
import { err } from "../errors.js";
import {
  PROJECT_OPERATIONS,
  describeLevel,
  hasProjectAccess,
  isGlobalAdmin,
  type AccessLevel,
  type ProjectOperation,
} from "../auth/permissions.js";
import type { Settings } from "../settings.js";
import type { Encryptor } from "./encryption.js";
import { checkName, tombstoneName } from "./names.js";
import { decodeNameToken, pageLimit, trimPage, type Page, type PageQuery } from "./paging.js";
import type { Principal } from "./users.js";

export const DEFAULT_PROJECT_NAME = "main";

export interface MemberView {
  userName: string;
  projectRole: ProjectRole;
}

export interface ProjectView {
  id: string;
  name: string;
  ownerName: string;
  isPublic: boolean;
  sshPublicKey: string;
  createdAt: Date;
  members: MemberView[];
}

export interface MemberInput {
  userName: string;
  projectRole: ProjectRole;
}

/** What `authorize` hands back: the project row (in the caller's EntityManager) and the caller's role. */
export interface Authorized {
  project: Project;
  role: ProjectRole | null;
}

function checkProjectRole(role: ProjectRole): ProjectRole {
  if (![ProjectRole.ADMIN, ProjectRole.MANAGER, ProjectRole.USER].includes(role)) {
    throw err("DSTACK_INVALID_ROLE", { kind: "project", role: String(role), allowed: "admin, manager, user" });
  }
  return role;
}

export class ProjectsService {
  constructor(
    private readonly orm: Orm,
    private readonly settings: Settings,
    private readonly encryptor: Encryptor,
  ) {}

  /**
   * Decides access to a project for an operation or access level; throws PermissionDenied.
   * Global admins asking for a missing project get NotFound (they may know it's missing).
   */
  async authorize(em: Em, actor: Principal, projectName: string, what: ProjectOperation | AccessLevel, actsOnSelfOnly = false): Promise<Authorized> {
    const level: AccessLevel = what in PROJECT_OPERATIONS ? PROJECT_OPERATIONS[what as ProjectOperation] : (what as AccessLevel);
    const project = await em.findOne(Project, { name: projectName, deleted: false });
    const denied = () => err("DSTACK_PERMISSION_DENIED", { action: `'${what}' on project '${projectName}'`, required: describeLevel(level, projectName) });
    if (!project) {
      if (isGlobalAdmin(actor)) throw err("DSTACK_PROJECT_NOT_FOUND", { project: projectName });
      throw denied();
    }
    const member = await em.findOne(Member, { project: project.id, user: actor.id });
    const role = member?.projectRole ?? null;
    if (!hasProjectAccess({ globalRole: actor.globalRole, projectRole: role, actsOnSelfOnly }, project, level)) throw denied();
    return { project, role };
  }

  /** Creates `main` with the admin as its project admin, once. */
  async ensureDefaultProject(admin: Principal): Promise<ProjectView> {
    const found = await this.orm.em.fork().findOne(Project, { name: DEFAULT_PROJECT_NAME, deleted: false });
    if (found) return this.view(this.orm.em.fork(), found);
    return this.create(admin, DEFAULT_PROJECT_NAME);
  }

  async create(actor: Principal, name: string, opts: { isPublic?: boolean } = {}): Promise<ProjectView> {
    checkName("project", name);
    return withTransaction(this.orm, async (em) => {
      if (await em.count(Project, { name, deleted: false })) throw err("DSTACK_PROJECT_EXISTS", { project: name });
      if (!isGlobalAdmin(actor)) {
        const owned = await em.count(Project, { owner: actor.id, deleted: false });
        if (owned >= this.settings.userProjectQuota) throw err("DSTACK_PROJECT_QUOTA", { user: actor.name, quota: this.settings.userProjectQuota });
      }
      const keys = ssh2.utils.generateKeyPairSync("ed25519");
      const project = build(Project, {
        name,
        owner: em.getReference(User, actor.id, { wrapped: true }),
        isPublic: opts.isPublic ?? false,
        sshPublicKey: keys.public,
        sshPrivateKey: "",
      });
      project.sshPrivateKey = this.encryptor.encrypt(keys.private, `project-ssh/${project.id}`);
      em.persist(project);
      em.persist(build(Member, { project: em.getReference(Project, project.id, { wrapped: true }), user: em.getReference(User, actor.id, { wrapped: true }), projectRole: ProjectRole.ADMIN }));
      await em.flush();
      return this.view(em, project);
    });
  }

  /** Soft-deletes: the rows stay for history, the name is freed. */
  async delete(actor: Principal, names: string[]): Promise<void> {
    await withTransaction(this.orm, async (em) => {
      for (const name of names) {
        const { project } = await this.authorize(em, actor, name, "project.delete");
        project.deleted = true;
        project.name = tombstoneName(project.name, project.id);
        await em.nativeDelete(Member, { project: project.id });
      }
    });
  }

  async get(actor: Principal, name: string): Promise<ProjectView> {
    const em = this.orm.em.fork();
    const { project } = await this.authorize(em, actor, name, "project.get");
    return this.view(em, project);
  }

  /** Projects the caller may see: all for global admins; otherwise memberships plus public ones. */
  async list(actor: Principal): Promise<ProjectView[]> {
    const em = this.orm.em.fork();
    let projects: Project[];
    if (isGlobalAdmin(actor)) {
      projects = await em.find(Project, { deleted: false }, { orderBy: { name: "asc" } });
    } else {
      const mine = await em.find(Member, { user: actor.id }, { fields: ["project"] });
      const ids = mine.map((m) => m.project.id);
      projects = await em.find(Project, { deleted: false, $or: [{ id: { $in: ids } }, { isPublic: true }] }, { orderBy: { name: "asc" } });
    }
    return Promise.all(projects.map((p) => this.view(em, p)));
  }

  /** One page of `list`, keyset-paginated by name. */
  async listPage(actor: Principal, q: PageQuery = {}): Promise<Page<ProjectView>> {
    const limit = pageLimit(q.limit);
    const after = decodeNameToken(q.pageToken);
    const em = this.orm.em.fork();
    const visible = isGlobalAdmin(actor)
      ? {}
      : { $or: [{ id: { $in: (await em.find(Member, { user: actor.id }, { fields: ["project"] })).map((m) => m.project.id) } }, { isPublic: true }] };
    const where = { deleted: false, ...visible, ...(after === null ? {} : { name: { $gt: after } }) };
    const page = trimPage(await em.find(Project, where, { orderBy: { name: "asc" }, limit: limit + 1 }), limit);
    return { items: await Promise.all(page.rows.map((p) => this.view(em, p))), nextPageToken: page.nextPageToken };
  }

  async update(actor: Principal, name: string, patch: { isPublic?: boolean }): Promise<ProjectView> {
    return withTransaction(this.orm, async (em) => {
      const { project } = await this.authorize(em, actor, name, "project.update");
      if (patch.isPublic !== undefined) project.isPublic = patch.isPublic;
      return this.view(em, project);
    });
  }

  /** Replaces the member list. Managers (non-admins) may not grant, change or remove the admin role. */
  async setMembers(actor: Principal, name: string, members: MemberInput[]): Promise<ProjectView> {
    return withTransaction(this.orm, async (em) => {
      const { project, role } = await this.authorize(em, actor, name, "members.set");
      const canTouchAdmins = isGlobalAdmin(actor) || role === ProjectRole.ADMIN;
      const current = await em.find(Member, { project: project.id }, { populate: ["user"] });
      const wanted = await this.resolveMembers(em, members);
      for (const m of current) {
        const next = wanted.get(m.user.id);
        const changes = next === undefined || next.role !== m.projectRole;
        if (changes && m.projectRole === ProjectRole.ADMIN && !canTouchAdmins) throw this.adminOnly(name);
        if (next === undefined) em.remove(m);
        else {
          m.projectRole = next.role;
          wanted.delete(m.user.id);
        }
      }
      for (const [userId, { role: r }] of wanted) {
        if (r === ProjectRole.ADMIN && !canTouchAdmins) throw this.adminOnly(name);
        em.persist(build(Member, { project: em.getReference(Project, project.id, { wrapped: true }), user: em.getReference(User, userId, { wrapped: true }), projectRole: r }));
      }
      await em.flush();
      return this.view(em, project);
    });
  }

  /** Adds or changes members. Anyone may join a public project themselves, as a plain user. */
  async addMembers(actor: Principal, name: string, members: MemberInput[]): Promise<ProjectView> {
    return withTransaction(this.orm, async (em) => {
      const { project, role } = await this.authorize(em, actor, name, "members.add");
      const isManager = isGlobalAdmin(actor) || role === ProjectRole.ADMIN || role === ProjectRole.MANAGER;
      const canTouchAdmins = isGlobalAdmin(actor) || role === ProjectRole.ADMIN;
      const wanted = await this.resolveMembers(em, members);
      if (!isManager) {
        // Self-join of a public project: only oneself, only as user.
        const selfOnly = [...wanted].every(([id, w]) => id === actor.id && w.role === ProjectRole.USER);
        if (!selfOnly) throw err("DSTACK_PERMISSION_DENIED", { action: `adding members to '${name}'`, required: describeLevel("manager", name) });
      }
      for (const [userId, w] of wanted) {
        const existing = await em.findOne(Member, { project: project.id, user: userId });
        if ((w.role === ProjectRole.ADMIN || existing?.projectRole === ProjectRole.ADMIN) && !canTouchAdmins) throw this.adminOnly(name);
        if (existing) existing.projectRole = w.role;
        else em.persist(build(Member, { project: em.getReference(Project, project.id, { wrapped: true }), user: em.getReference(User, userId, { wrapped: true }), projectRole: w.role }));
      }
      await em.flush();
      return this.view(em, project);
    });
  }

  /** Removes members: managers remove others (admins only by admins); anyone may leave. */
  async removeMembers(actor: Principal, name: string, userNames: string[]): Promise<ProjectView> {
    return withTransaction(this.orm, async (em) => {
      const selfOnly = userNames.length > 0 && userNames.every((u) => u === actor.name);
      const { project, role } = await this.authorize(em, actor, name, "members.remove", selfOnly);
      const canTouchAdmins = isGlobalAdmin(actor) || role === ProjectRole.ADMIN || selfOnly;
      for (const userName of userNames) {
        const m = await em.findOne(Member, { project: project.id, user: { name: userName, deleted: false } });
        if (!m) throw err("DSTACK_MEMBER_NOT_FOUND", { user: userName, project: name });
        if (m.projectRole === ProjectRole.ADMIN && !canTouchAdmins) throw this.adminOnly(name);
        em.remove(m);
      }
      await em.flush();
      return this.view(em, project);
    });
  }

  private adminOnly(project: string) {
    return err("DSTACK_PERMISSION_DENIED", { action: `granting, changing or removing the admin role in '${project}'`, required: describeLevel("admin", project) });
  }

  private async resolveMembers(em: Em, members: MemberInput[]): Promise<Map<string, { role: ProjectRole }>> {
    const out = new Map<string, { role: ProjectRole }>();
    for (const m of members) {
      const user = await em.findOne(User, { name: m.userName, deleted: false });
      if (!user) throw err("DSTACK_USER_NOT_FOUND", { user: m.userName });
      out.set(user.id, { role: checkProjectRole(m.projectRole) });
    }
    return out;
  }

  private async view(em: Em, p: Project): Promise<ProjectView> {
    const members = await em.find(Member, { project: p.id }, { populate: ["user"], orderBy: { createdAt: "asc" } });
    const owner = await em.findOneOrFail(User, { id: p.owner.id });
    return {
      id: p.id,
      name: p.name,
      ownerName: owner.name,
      isPublic: p.isPublic,
      sshPublicKey: p.sshPublicKey,
      createdAt: p.createdAt,
      members: members.map((m) => ({ userName: m.user.getEntity().name, projectRole: m.projectRole })),
    };
  }

  /** The project's SSH private key, for provisioning hosts (system use, no caller). */
  async projectPrivateKey(projectId: string): Promise<string> {
    const p = await this.orm.em.fork().findOneOrFail(Project, { id: projectId });
    return this.encryptor.decrypt(p.sshPrivateKey, `project-ssh/${p.id}`);
  }
}

export const projectRoleName = (r: ProjectRole): string => enumName(ProjectRole, r);
export const isAdminRole = (g: GlobalRole): boolean => g === GlobalRole.ADMIN;
