// The persistent model. Plain classes described by EntitySchema: esbuild/tsx emit no
// decorator metadata, and explicit schemas keep column types identical on SQLite and PG.
import { randomUUID } from "node:crypto";
import { DateTimeType, EntitySchema, type Ref } from "@mikro-orm/core";
import {
  FleetStatus,
  GlobalRole,
  InstanceStatus,
  InstanceTerminationReason,
  JobStatus,
  JobTerminationReason,
  ProjectRole,
  RunStatus,
  RunTerminationReason,
  enumName,
} from "../domain/enums.js";
import { EnumNameType } from "./enum-type.js";

type Json = Record<string, unknown>;

abstract class Base {
  id: string = randomUUID();
  createdAt: Date = new Date();
  updatedAt: Date = new Date();
}

const base = new EntitySchema<Base>({
  name: "Base",
  abstract: true,
  properties: {
    id: { type: "uuid", primary: true },
    createdAt: { type: DateTimeType, onCreate: () => new Date() },
    updatedAt: { type: DateTimeType, onCreate: () => new Date(), onUpdate: () => new Date() },
  },
});

export class User extends Base {
  name!: string;
  globalRole: GlobalRole = GlobalRole.USER;
  /** sha256 (hex) of the bearer token; the token itself is never stored. */
  tokenHash!: string;
  email: string | null = null;
  active = true;
  deleted = false;
  sshPublicKey: string | null = null;
}

/** An SSH public key a user registered (OpenSSH authorized_keys format). */
export class UserPublicKey extends Base {
  user!: Ref<User>;
  name!: string;
  type!: string;
  publicKey!: string;
  /** "SHA256:<base64, unpadded>", as `ssh-keygen -lf` prints it. */
  fingerprint!: string;
}

export class Project extends Base {
  name!: string;
  owner!: Ref<User>;
  isPublic = false;
  deleted = false;
  /** Project key pair (OpenSSH format) the server uses to reach hosts; private half encrypted at rest. */
  sshPublicKey!: string;
  sshPrivateKey!: string;
}

export class Member extends Base {
  project!: Ref<Project>;
  user!: Ref<User>;
  projectRole!: ProjectRole;
}

export class Secret extends Base {
  project!: Ref<Project>;
  name!: string;
  /** AES-256-GCM envelope, see services/encryption.ts. */
  value!: string;
}

export class Fleet extends Base {
  project!: Ref<Project>;
  name!: string;
  status: FleetStatus = FleetStatus.SUBMITTED;
  spec: Json = {};
  deleted = false;
}

export class Instance extends Base {
  fleet: Ref<Fleet> | null = null;
  project!: Ref<Project>;
  name!: string;
  instanceNum = 0;
  status: InstanceStatus = InstanceStatus.PENDING;
  terminationReason: InstanceTerminationReason | null = null;
  terminationReasonMessage: string | null = null;
  unreachable = false;
  busyBlocks = 0;
  totalBlocks = 1;
  hostInfo: Json | null = null;
  price: number | null = null;
  backend: string | null = null;
  region: string | null = null;
  lastHeartbeatAt: Date | null = null;
  /** SSH fleet hosts: how the server reaches the host and where the shim is installed (RemoteConnection). */
  remoteConnection: Json | null = null;
  deleted = false;
}

export class Run extends Base {
  project!: Ref<Project>;
  user!: Ref<User>;
  runName!: string;
  status: RunStatus = RunStatus.SUBMITTED;
  terminationReason: RunTerminationReason | null = null;
  runSpec: Json = {};
  submittedAt: Date = new Date();
  finishedAt: Date | null = null;
  lastProcessedAt: Date = new Date();
  deleted = false;
  priority = 0;
  /** Which resubmission this is, for the retry backoff. */
  resubmissionAttempt = 0;
  /** Cron runs: the current (or next) trigger time. */
  nextTriggeredAt: Date | null = null;
  /** Services: bumped by each in-place update; replicas of older deployments are rolled over. */
  deploymentNum = 0;
  /** Services with `scaling`: the replica count the autoscaler chose (null: the range's minimum), and when. */
  desiredReplicaCount: number | null = null;
  lastScaledAt: Date | null = null;
}

export class Job extends Base {
  run!: Ref<Run>;
  jobNum = 0;
  replicaNum = 0;
  /** A retry is a new row with submissionNum + 1. */
  submissionNum = 0;
  status: JobStatus = JobStatus.SUBMITTED;
  terminationReason: JobTerminationReason | null = null;
  terminationReasonMessage: string | null = null;
  exitStatus: number | null = null;
  jobSpec: Json = {};
  /** Set once the job got a machine; retry windows are measured from it. */
  provisioningData: Json | null = null;
  instance: Ref<Instance> | null = null;
  submittedAt: Date = new Date();
  finishedAt: Date | null = null;
  disconnectedAt: Date | null = null;
  lastProcessedAt: Date = new Date();
  /** Blocks of `instance` this submission holds; released when it finishes. */
  blocks = 0;
  /** When it reached running: `max_duration` counts from here. */
  runningAt: Date | null = null;
  /** Terminating jobs are finalized (force-stopped) at this time: the `stop_duration` grace. */
  removeAt: Date | null = null;
  /** When its runner first linked home; a job placed too long without it fails (waiting_runner_limit). */
  runnerLinkedAt: Date | null = null;
  /** The run's deployment this submission runs (services' rolling updates). */
  deploymentNum = 0;
}

export class JoinToken extends Base {
  project!: Ref<Project>;
  fleet: Ref<Fleet> | null = null;
  /** What the token enrolls: "shim" (a host into a fleet) or "runner" (a job's container). */
  purpose!: string;
  tokenHash!: string;
  expiresAt!: Date;
  revoked = false;
  /** Last enrollment with it. */
  usedAt: Date | null = null;
  /** Enrollments it allows (reusable shim tokens); null = no limit but the expiry. */
  maxUses: number | null = null;
  /** Enrollments so far. */
  useCount = 0;
}

export class CodeBlob extends Base {
  project!: Ref<Project>;
  blobHash!: string;
  /** Small blobs live in the row; large ones on disk under the server dir (`path`). */
  blob: Buffer | null = null;
  path: string | null = null;
}

// Dates use the DateTimeType class, not the "datetime" string: with the string, MikroORM on
// SQLite snapshots loaded dates as Date but compares them as epoch numbers, so every loaded
// row looked dirty and was written back on flush (same DDL either way, on both dialects).
// Deleting a project removes what hangs off it; users and instances are only unlinked.
const ref = (entity: string, deleteRule: "cascade" | "no action" = "cascade") =>
  ({ kind: "m:1", entity, ref: true, deleteRule }) as const;
const nullableRef = (entity: string) => ({ kind: "m:1", entity, ref: true, nullable: true, deleteRule: "set null" }) as const;
// The column default is the member *name*; without it MikroORM would take the class
// initializer (a number) as the SQL default.
const enumCol = (e: Record<string, string | number>, dflt: number | null = null) =>
  dflt === null
    ? { type: new EnumNameType(e), length: 64, nullable: true }
    : { type: new EnumNameType(e), length: 64, default: enumName(e, dflt) };

export const UserSchema = new EntitySchema<User, Base>({
  class: User,
  extends: base,
  tableName: "users",
  properties: {
    name: { type: "string", length: 100, unique: true },
    globalRole: enumCol(GlobalRole, GlobalRole.USER),
    tokenHash: { type: "string", length: 64, unique: true },
    email: { type: "string", length: 320, nullable: true },
    active: { type: "boolean", default: true },
    deleted: { type: "boolean", default: false },
    sshPublicKey: { type: "text", nullable: true },
  },
});

export const UserPublicKeySchema = new EntitySchema<UserPublicKey, Base>({
  class: UserPublicKey,
  extends: base,
  tableName: "user_public_keys",
  uniques: [{ properties: ["user", "fingerprint"] }],
  properties: {
    user: ref("User"),
    name: { type: "string", length: 200 },
    type: { type: "string", length: 64 },
    publicKey: { type: "text" },
    fingerprint: { type: "string", length: 100 },
  },
});

export const ProjectSchema = new EntitySchema<Project, Base>({
  class: Project,
  extends: base,
  tableName: "projects",
  properties: {
    name: { type: "string", length: 100, unique: true },
    owner: ref("User", "no action"),
    isPublic: { type: "boolean", default: false },
    deleted: { type: "boolean", default: false },
    sshPublicKey: { type: "text" },
    sshPrivateKey: { type: "text" },
  },
});

export const MemberSchema = new EntitySchema<Member, Base>({
  class: Member,
  extends: base,
  tableName: "members",
  uniques: [{ properties: ["project", "user"] }],
  properties: {
    project: ref("Project"),
    user: ref("User"),
    projectRole: enumCol(ProjectRole, ProjectRole.USER),
  },
});

export const SecretSchema = new EntitySchema<Secret, Base>({
  class: Secret,
  extends: base,
  tableName: "secrets",
  uniques: [{ properties: ["project", "name"] }],
  properties: {
    project: ref("Project"),
    name: { type: "string", length: 200 },
    value: { type: "text" },
  },
});

export const FleetSchema = new EntitySchema<Fleet, Base>({
  class: Fleet,
  extends: base,
  tableName: "fleets",
  indexes: [{ properties: ["project", "name"] }],
  properties: {
    project: ref("Project"),
    name: { type: "string", length: 100 },
    status: { ...enumCol(FleetStatus, FleetStatus.SUBMITTED), index: true },
    spec: { type: "json" },
    deleted: { type: "boolean", default: false },
  },
});

export const InstanceSchema = new EntitySchema<Instance, Base>({
  class: Instance,
  extends: base,
  tableName: "instances",
  indexes: [{ properties: ["project", "status"] }],
  properties: {
    fleet: nullableRef("Fleet"),
    project: ref("Project"),
    name: { type: "string", length: 200 },
    instanceNum: { type: "integer", default: 0 },
    status: { ...enumCol(InstanceStatus, InstanceStatus.PENDING), index: true },
    terminationReason: enumCol(InstanceTerminationReason),
    terminationReasonMessage: { type: "text", nullable: true },
    unreachable: { type: "boolean", default: false },
    busyBlocks: { type: "integer", default: 0 },
    totalBlocks: { type: "integer", default: 1 },
    hostInfo: { type: "json", nullable: true },
    price: { type: "double", nullable: true },
    backend: { type: "string", length: 64, nullable: true },
    region: { type: "string", length: 200, nullable: true },
    lastHeartbeatAt: { type: DateTimeType, nullable: true },
    remoteConnection: { type: "json", nullable: true },
    deleted: { type: "boolean", default: false },
  },
});

export const RunSchema = new EntitySchema<Run, Base>({
  class: Run,
  extends: base,
  tableName: "runs",
  // Listing is keyset-paginated by (submitted_at, id), newest first, per project or overall.
  indexes: [
    { properties: ["project", "runName"] },
    { properties: ["project", "submittedAt", "id"] },
    { properties: ["submittedAt", "id"] },
  ],
  properties: {
    project: ref("Project"),
    user: ref("User", "no action"),
    runName: { type: "string", length: 200 },
    status: { ...enumCol(RunStatus, RunStatus.SUBMITTED), index: true },
    terminationReason: enumCol(RunTerminationReason),
    runSpec: { type: "json" },
    submittedAt: { type: DateTimeType },
    finishedAt: { type: DateTimeType, nullable: true },
    lastProcessedAt: { type: DateTimeType },
    deleted: { type: "boolean", default: false },
    priority: { type: "integer", default: 0 },
    resubmissionAttempt: { type: "integer", default: 0 },
    nextTriggeredAt: { type: DateTimeType, nullable: true },
    deploymentNum: { type: "integer", default: 0 },
    desiredReplicaCount: { type: "integer", nullable: true },
    lastScaledAt: { type: DateTimeType, nullable: true },
  },
});

export const JobSchema = new EntitySchema<Job, Base>({
  class: Job,
  extends: base,
  tableName: "jobs",
  indexes: [{ properties: ["run", "replicaNum", "jobNum", "submissionNum"] }, { properties: ["instance"] }],
  properties: {
    run: ref("Run"),
    jobNum: { type: "integer" },
    replicaNum: { type: "integer" },
    submissionNum: { type: "integer" },
    status: { ...enumCol(JobStatus, JobStatus.SUBMITTED), index: true },
    terminationReason: enumCol(JobTerminationReason),
    terminationReasonMessage: { type: "text", nullable: true },
    exitStatus: { type: "integer", nullable: true },
    jobSpec: { type: "json" },
    provisioningData: { type: "json", nullable: true },
    instance: nullableRef("Instance"),
    submittedAt: { type: DateTimeType },
    finishedAt: { type: DateTimeType, nullable: true },
    disconnectedAt: { type: DateTimeType, nullable: true },
    lastProcessedAt: { type: DateTimeType },
    blocks: { type: "integer", default: 0 },
    runningAt: { type: DateTimeType, nullable: true },
    removeAt: { type: DateTimeType, nullable: true },
    runnerLinkedAt: { type: DateTimeType, nullable: true },
    deploymentNum: { type: "integer", default: 0 },
  },
});

export const JoinTokenSchema = new EntitySchema<JoinToken, Base>({
  class: JoinToken,
  extends: base,
  tableName: "join_tokens",
  properties: {
    project: ref("Project"),
    fleet: nullableRef("Fleet"),
    purpose: { type: "string", length: 32 },
    tokenHash: { type: "string", length: 64, unique: true },
    expiresAt: { type: DateTimeType },
    revoked: { type: "boolean", default: false },
    usedAt: { type: DateTimeType, nullable: true },
    maxUses: { type: "integer", nullable: true },
    useCount: { type: "integer", default: 0 },
  },
});

export const CodeBlobSchema = new EntitySchema<CodeBlob, Base>({
  class: CodeBlob,
  extends: base,
  tableName: "code_blobs",
  uniques: [{ properties: ["project", "blobHash"] }],
  properties: {
    project: ref("Project"),
    blobHash: { type: "string", length: 128 },
    blob: { type: "blob", nullable: true },
    path: { type: "text", nullable: true },
  },
});

export const ENTITY_SCHEMAS = [
  base,
  UserSchema,
  UserPublicKeySchema,
  ProjectSchema,
  MemberSchema,
  SecretSchema,
  FleetSchema,
  InstanceSchema,
  RunSchema,
  JobSchema,
  JoinTokenSchema,
  CodeBlobSchema,
];

/** A new entity with its defaults, then `data` on top (persist it with `em.persist`). */
export function build<T extends object>(cls: new () => T, data: Partial<T>): T {
  return Object.assign(new cls(), data);
}
