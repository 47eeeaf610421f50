// Code blobs (a git diff or a tarball of the working tree), content-addressed by SHA-256 per
// project. Uploading the same hash twice stores it once; blobs above the limit are refused
// before they touch the database.
import { createHash } from "node:crypto";
import { withTransaction, type Orm } from "../db/database.js";
import { CodeBlob, Project, build } from "../db/entities.js";
import { err } from "../errors.js";
import type { ProjectsService } from "./projects.js";
import type { Principal } from "./users.js";

/** dstack's default for DSTACK_SERVER_CODE_UPLOAD_LIMIT: 2 MiB. */
export const DEFAULT_CODE_UPLOAD_LIMIT = 2 * 1024 * 1024;

export class CodeService {
  constructor(
    private readonly orm: Orm,
    private readonly projects: ProjectsService,
    /** Bytes; 0 = unlimited. */
    readonly uploadLimit: number = DEFAULT_CODE_UPLOAD_LIMIT,
  ) {}

  async upload(actor: Principal, projectName: string, hash: string, blob: Uint8Array): Promise<{ alreadyExists: boolean }> {
    if (this.uploadLimit > 0 && blob.byteLength > this.uploadLimit) throw err("DSTACK_CODE_TOO_LARGE", { size: blob.byteLength, limit: this.uploadLimit });
    const actual = createHash("sha256").update(blob).digest("hex");
    if (actual !== hash.toLowerCase()) throw err("DSTACK_CODE_HASH_MISMATCH", { actual, declared: hash });
    return withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "runs.apply");
      if (await em.count(CodeBlob, { project: project.id, blobHash: actual })) return { alreadyExists: true };
      em.persist(build(CodeBlob, { project: em.getReference(Project, project.id, { wrapped: true }), blobHash: actual, blob: Buffer.from(blob) }));
      return { alreadyExists: false };
    });
  }

  /** The blob for a job's runner (system use). */
  async get(projectId: string, hash: string): Promise<Buffer | null> {
    const row = await this.orm.em.fork().findOne(CodeBlob, { project: projectId, blobHash: hash.toLowerCase() });
    return row?.blob ?? null;
  }
}
