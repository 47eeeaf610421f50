// `dstack-shim systemd-unit`: a unit that keeps the shim running (and restarts it after a
// shutdown command or an upgrade). Containers survive restarts; the shim adopts them.
import { fileURLToPath } from "node:url";

export interface UnitOptions {
  home: string;
  logLevel?: string;
  /** Default: this Node binary. */
  node?: string;
  /** Default: agent-shim/bin/dstack-shim.js next to this file. */
  bin?: string;
}

const quote = (s: string): string => (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `"${s.replace(/(["\\$`])/g, "\\$1")}"`);

export function systemdUnit(o: UnitOptions): string {
  const node = o.node ?? process.execPath;
  const bin = o.bin ?? fileURLToPath(new URL("../../bin/dstack-shim.js", import.meta.url));
  const args = [node, bin, "run", "--home", o.home, ...(o.logLevel ? ["--log-level", o.logLevel] : [])];
  return [
    "[Unit]",
    "Description=dstack-shim (dstack host agent)",
    "After=network-online.target docker.service",
    "Wants=network-online.target",
    "Requires=docker.service",
    "",
    "[Service]",
    "Type=simple",
    `ExecStart=${args.map(quote).join(" ")}`,
    "Restart=always",
    "RestartSec=2",
    // Stop only the shim: the task containers belong to Docker and keep running.
    "KillMode=process",
    "TimeoutStopSec=30",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}
