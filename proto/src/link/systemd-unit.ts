// The systemd unit that keeps a dstack-shim running, shared by `dstack-shim systemd-unit` (a host
// set up by hand) and the server's SSH-fleet provisioner (a host set up over SSH), so both get the
// same restart and stop behaviour.

export interface ShimUnitOptions {
  /** The unit's Description=. */
  description: string;
  /** The command and its arguments; each word is quoted for systemd where needed. */
  command: string[];
  /** A file stdout and stderr are appended to; default: the journal. */
  logFile?: string;
  /**
   * Adds Requires=docker.service. A host set up by hand runs the packaged Docker; the provisioner
   * leaves it out because it checked that Docker answers, whatever unit (or snap) runs it.
   */
  requireDocker?: boolean;
}

/**
 * One word of an ExecStart= line: plain when it has nothing systemd reads specially, else double
 * quoted with `\` and `"` escaped, `$` doubled (no variable expansion) and `%` doubled (no specifier).
 */
export function systemdWord(s: string): string {
  if (/^[A-Za-z0-9_@+=:,./-]+$/.test(s)) return s;
  return `"${s.replace(/(["\\])/g, "\\$1").replace(/\$/g, "$$$$").replace(/%/g, "%%")}"`;
}

/** A path in a setting that takes one file (StandardOutput=append:…): only specifiers are special. */
const systemdPath = (s: string): string => s.replace(/%/g, "%%");

export function shimSystemdUnit(o: ShimUnitOptions): string {
  if (o.command.length === 0) throw new Error("shimSystemdUnit: the command is empty");
  return [
    "[Unit]",
    `Description=${o.description}`,
    "After=network-online.target docker.service",
    "Wants=network-online.target",
    ...(o.requireDocker ? ["Requires=docker.service"] : []),
    "",
    "[Service]",
    "Type=simple",
    `ExecStart=${o.command.map(systemdWord).join(" ")}`,
    ...(o.logFile ? [`StandardOutput=append:${systemdPath(o.logFile)}`, `StandardError=append:${systemdPath(o.logFile)}`] : []),
    "Restart=always",
    "RestartSec=2",
    // Stop only the shim: the task containers belong to Docker and keep running; the shim adopts them.
    "KillMode=process",
    "TimeoutStopSec=30",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}
