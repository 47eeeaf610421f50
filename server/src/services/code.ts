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

  /**
   * A `files:` archive: stored in the same content-addressed table as code (a runner downloads
   * both the same way), after the same limit and hash checks, and only if it is a tar (plain or
   * gzipped), so a run never fails late on an archive its runner cannot extract.
   */
  async uploadFileArchive(actor: Principal, projectName: string, hash: string, blob: Uint8Array): Promise<{ alreadyExists: boolean }> {
    if (this.uploadLimit > 0 && blob.byteLength > this.uploadLimit) throw err("DSTACK_FILE_ARCHIVE_TOO_LARGE", { size: blob.byteLength, limit: this.uploadLimit });
    const actual = createHash("sha256").update(blob).digest("hex");
    if (actual !== hash.toLowerCase()) throw err("DSTACK_CODE_HASH_MISMATCH", { actual, declared: hash });
    if (!isTarArchive(blob)) throw err("DSTACK_FILE_ARCHIVE_INVALID", { hash: actual });
    return withTransaction(this.orm, async (em) => {
      const { project } = await this.projects.authorize(em, actor, projectName, "runs.apply");
      if (await em.count(CodeBlob, { project: project.id, blobHash: actual })) return { alreadyExists: true };
      em.persist(build(CodeBlob, { project: em.getReference(Project, project.id, { wrapped: true }), blobHash: actual, blob: Buffer.from(blob) }));
      return { alreadyExists: false };
    });
  }

  /** Size of a stored blob of the project, or null: lets a client skip uploading what is there. */
  async blobSize(actor: Principal, projectName: string, hash: string): Promise<number | null> {
    const em = this.orm.em.fork();
    const { project } = await this.projects.authorize(em, actor, projectName, "runs.apply");
    const row = await em.findOne(CodeBlob, { project: project.id, blobHash: hash.toLowerCase() });
    return row ? (row.blob?.byteLength ?? 0) : null;
  }

  /** The blob for a job's runner (system use). */
  async get(projectId: string, hash: string): Promise<Buffer | null> {
    const row = await this.orm.em.fork().findOne(CodeBlob, { project: projectId, blobHash: hash.toLowerCase() });
    return row?.blob ?? null;
  }
}

/** A gzip stream (tar.gz), or a tar whose first header has the ustar magic and a valid checksum. */
export function isTarArchive(blob: Uint8Array): boolean {
  if (blob.byteLength >= 2 && blob[0] === 0x1f && blob[1] === 0x8b) return true;
  if (blob.byteLength < 512) return false;
  const header = Buffer.from(blob.buffer, blob.byteOffset, 512);
  if (!header.subarray(257, 262).equals(Buffer.from("ustar"))) return false;
  const declared = parseInt(header.subarray(148, 156).toString("latin1").replace(/\0.*$/s, "").trim(), 8);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  return declared === sum;
}
