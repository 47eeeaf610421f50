// Signals for processes started with `docker exec`. Docker has no API to signal an exec, so the
// shim signals the exec's host PID itself — but only after checking, through /proc, that the PID
// really lives in the container's PID namespace. When the shim cannot see the container's
// processes (it runs in its own PID namespace, or the container shares the host's), nothing is
// sent and the caller is told so.
import { readlinkSync } from "node:fs";

/** SSH signal names (RFC 4254 §6.10, without "SIG") the server passes on. */
export const SSH_SIGNALS: ReadonlySet<string> = new Set([
  "ABRT", "ALRM", "FPE", "HUP", "ILL", "INT", "KILL", "PIPE", "QUIT", "SEGV", "TERM", "USR1", "USR2",
]);

function pidNamespace(pid: number | "self"): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return undefined;
  }
}

/**
 * Sends SIG<name> to host PID `pid` when it belongs to the PID namespace of the container whose
 * init process is `containerInitPid`, and that namespace is not the shim's own (a PID seen from a
 * namespace other than the host's would name some unrelated process). Returns whether it was sent.
 */
export function signalContainerProcess(pid: number, containerInitPid: number, name: string): boolean {
  if (!SSH_SIGNALS.has(name) || !(pid > 0) || !(containerInitPid > 0)) return false;
  const ns = pidNamespace(pid);
  if (!ns || ns !== pidNamespace(containerInitPid) || ns === pidNamespace("self")) return false;
  try {
    process.kill(pid, `SIG${name}` as NodeJS.Signals);
    return true;
  } catch {
    return false;
  }
}
