// Typed failures of host discovery. Callers tell "tool not installed" (normal on a
// CPU host) apart from "tool broke" (worth a warning) by class, not by message.

/** A vendor tool (nvidia-smi, amd-smi, rocm-smi) is not on PATH. */
export class GpuToolMissingError extends Error {
  override readonly name = "GpuToolMissingError";
  constructor(readonly tool: string) {
    super(`${tool} not found`);
  }
}

/** A vendor tool ran but exited non-zero or timed out. */
export class GpuToolFailedError extends Error {
  override readonly name = "GpuToolFailedError";
  constructor(
    readonly tool: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${tool} failed (exit ${exitCode ?? "signal/timeout"}): ${firstLine(stderr)}`);
  }
}

/** A vendor tool's output could not be understood. */
export class GpuToolOutputError extends Error {
  override readonly name = "GpuToolOutputError";
  constructor(
    readonly tool: string,
    readonly reason: string,
    readonly output: string,
  ) {
    super(`${tool} output not understood: ${reason}`);
  }
}

export type GpuToolError = GpuToolMissingError | GpuToolFailedError | GpuToolOutputError;

function firstLine(text: string): string {
  const line = text.trim().split("\n")[0] ?? "";
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}
