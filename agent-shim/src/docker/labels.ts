// Container labels: the shim's memory that survives the shim. A restarted shim lists containers
// labelled with its instance id and rebuilds its tasks from them (see recovery in executor.ts).

export const LABEL_INSTANCE = "dstack.shim.instance-id";
export const LABEL_TASK = "dstack.task.id";
/** JSON of RecoveryRecord. */
export const LABEL_RECORD = "dstack.shim.task";

/** What a label must hold to rebuild a task's TaskInfo (labels are fixed at create time). */
export interface RecoveryRecord {
  v: 1;
  containerName: string;
  imageName: string;
  gpuIds: string[];
  networkMode: "host" | "bridge";
  /** Container ports asked for; host ports are read back from the container itself. */
  ports: number[];
  /** The runner bundle was the entrypoint. */
  runner: boolean;
  /** Public keys allowed to log in to the task over the embedded SSH server (public, so safe in a label). */
  sshKeys: string[];
  /** The user SSH sessions run as inside the container ("" = the image's user). */
  containerUser: string;
}

export function taskLabels(instanceId: string, taskId: string, rec: RecoveryRecord): Record<string, string> {
  return { [LABEL_INSTANCE]: instanceId, [LABEL_TASK]: taskId, [LABEL_RECORD]: JSON.stringify(rec) };
}

/** Reads a container's record back; null when the label is missing or not ours. */
export function parseRecord(labels: Record<string, string> | undefined): RecoveryRecord | null {
  const raw = labels?.[LABEL_RECORD];
  if (!raw) return null;
  try {
    const r = JSON.parse(raw) as Partial<RecoveryRecord>;
    if (r.v !== 1 || typeof r.containerName !== "string") return null;
    return {
      v: 1,
      containerName: r.containerName,
      imageName: typeof r.imageName === "string" ? r.imageName : "",
      gpuIds: Array.isArray(r.gpuIds) ? r.gpuIds.filter((x): x is string => typeof x === "string") : [],
      networkMode: r.networkMode === "bridge" ? "bridge" : "host",
      ports: Array.isArray(r.ports) ? r.ports.filter((x): x is number => Number.isInteger(x)) : [],
      runner: r.runner === true,
      sshKeys: Array.isArray(r.sshKeys) ? r.sshKeys.filter((x): x is string => typeof x === "string") : [],
      containerUser: typeof r.containerUser === "string" ? r.containerUser : "",
    };
  } catch {
    return null;
  }
}
