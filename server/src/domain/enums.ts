// Status and reason enums of the domain.
//
// TEMPORARY: these mirror the shape protoc-gen-es v2 generates for the enums in
// proto/dstack/api/v1 (prefix stripped, UNSPECIFIED = 0). When the generated ones land in
// proto/gen, this file becomes a re-export of them; code elsewhere only uses the member
// names, and the DB stores lowercase member names (see db/enum-type.ts), so numbering
// differences do not matter.

export enum RunStatus {
  UNSPECIFIED = 0,
  PENDING = 1,
  SUBMITTED = 2,
  PROVISIONING = 3,
  RUNNING = 4,
  TERMINATING = 5,
  TERMINATED = 6,
  FAILED = 7,
  DONE = 8,
}

export enum JobStatus {
  UNSPECIFIED = 0,
  SUBMITTED = 1,
  PROVISIONING = 2,
  PULLING = 3,
  RUNNING = 4,
  TERMINATING = 5,
  TERMINATED = 6,
  ABORTED = 7,
  FAILED = 8,
  DONE = 9,
}

export enum InstanceStatus {
  UNSPECIFIED = 0,
  PENDING = 1,
  PROVISIONING = 2,
  IDLE = 3,
  BUSY = 4,
  TERMINATING = 5,
  TERMINATED = 6,
}

export enum FleetStatus {
  UNSPECIFIED = 0,
  SUBMITTED = 1,
  ACTIVE = 2,
  TERMINATING = 3,
  TERMINATED = 4,
  FAILED = 5,
}

export enum RunTerminationReason {
  UNSPECIFIED = 0,
  ALL_JOBS_DONE = 1,
  JOB_FAILED = 2,
  RETRY_LIMIT_EXCEEDED = 3,
  STOPPED_BY_USER = 4,
  ABORTED_BY_USER = 5,
  SERVER_ERROR = 6,
  GATEWAY_ERROR = 7,
}

export enum JobTerminationReason {
  UNSPECIFIED = 0,
  FAILED_TO_START_DUE_TO_NO_CAPACITY = 1,
  INTERRUPTED_BY_NO_CAPACITY = 2,
  INSTANCE_UNREACHABLE = 3,
  WAITING_INSTANCE_LIMIT_EXCEEDED = 4,
  WAITING_RUNNER_LIMIT_EXCEEDED = 5,
  TERMINATED_BY_USER = 6,
  VOLUME_ERROR = 7,
  GATEWAY_ERROR = 8,
  SCALED_DOWN = 9,
  DONE_BY_RUNNER = 10,
  ABORTED_BY_USER = 11,
  TERMINATED_BY_SERVER = 12,
  INACTIVITY_DURATION_EXCEEDED = 13,
  TERMINATED_DUE_TO_UTILIZATION_POLICY = 14,
  CONTAINER_EXITED_WITH_ERROR = 15,
  PORTS_BINDING_FAILED = 16,
  CREATING_CONTAINER_ERROR = 17,
  EXECUTOR_ERROR = 18,
  MAX_DURATION_EXCEEDED = 19,
  LOG_QUOTA_EXCEEDED = 20,
  INSTANCE_ACCESS_REVOKED = 21,
}

export enum InstanceTerminationReason {
  UNSPECIFIED = 0,
  TERMINATED_BY_USER = 1,
  IDLE_TIMEOUT = 2,
  PROVISIONING_TIMEOUT = 3,
  ERROR = 4,
  JOB_FINISHED = 5,
  UNREACHABLE = 6,
  NO_OFFERS = 7,
  MASTER_FAILED = 8,
  MAX_INSTANCES_LIMIT = 9,
  FLEET_SPEC_MISMATCH = 10,
  NO_BALANCE = 11,
}

export enum GlobalRole {
  UNSPECIFIED = 0,
  ADMIN = 1,
  USER = 2,
}

export enum ProjectRole {
  UNSPECIFIED = 0,
  ADMIN = 1,
  MANAGER = 2,
  USER = 3,
}

/** A TS numeric enum object (member name → number, number → member name). */
export type NumericEnum = Record<string, string | number>;

/** `RunStatus.RUNNING` → `"running"`: how enums are stored in the DB and shown to users. */
export function enumName<E extends NumericEnum>(e: E, value: number): string {
  const name = e[value];
  if (typeof name !== "string" || value === 0) throw new RangeError(`no enum member for ${value}`);
  return name.toLowerCase();
}

/** `"running"` → `RunStatus.RUNNING`; undefined when the name is not a member (or is UNSPECIFIED). */
export function enumValue<E extends NumericEnum>(e: E, name: string): E[keyof E] | undefined {
  const v = e[name.toUpperCase()];
  return typeof v === "number" && v !== 0 ? (v as E[keyof E]) : undefined;
}
