import type { CommandResult, HostDeps } from "./deps.js";
import { GpuToolMissingError } from "./errors.js";

/** deps.run with a missing executable turned into GpuToolMissingError. */
export async function runTool(
  deps: HostDeps,
  tool: string,
  command: string,
  args: string[],
  timeoutMs: number,
): Promise<CommandResult> {
  try {
    return await deps.run(command, args, { timeoutMs });
  } catch (err) {
    if ((err as NodeJS.ErrnoException | null)?.code === "ENOENT") throw new GpuToolMissingError(tool);
    throw err;
  }
}
