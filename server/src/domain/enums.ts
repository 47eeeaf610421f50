// Status, reason and role enums of the domain. The single source of truth is the protobuf
// contract (proto/dstack/api/v1, generated into proto/gen): they are re-exported from there,
// so the state machines, the database and the API all speak the same values. The database
// stores lowercase member names (see db/enum-type.ts), so renumbering in the .proto files
// would not corrupt stored rows.
export {
  FleetStatus,
  GlobalRole,
  InstanceStatus,
  InstanceTerminationReason,
  JobStatus,
  JobTerminationReason,
  ProjectRole,
  RunStatus,
  RunTerminationReason,
} from "@dstack/proto/api";

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
