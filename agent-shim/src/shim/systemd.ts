// `dstack-shim systemd-unit`: a unit that keeps the shim running (and restarts it after a
// shutdown command or an upgrade). Containers survive restarts; the shim adopts them. The unit
// text itself comes from @dstack/proto/link, shared with the server's SSH-fleet provisioner.
import { fileURLToPath } from "node:url";
import { shimSystemdUnit } from "@dstack/proto/link";

export interface UnitOptions {
  home: string;
  logLevel?: string;
  /** Default: this Node binary. */
  node?: string;
  /** Default: agent-shim/bin/dstack-shim.js next to this file. */
  bin?: string;
}

export function systemdUnit(o: UnitOptions): string {
  const node = o.node ?? process.execPath;
  const bin = o.bin ?? fileURLToPath(new URL("../../bin/dstack-shim.js", import.meta.url));
  return shimSystemdUnit({
    description: "dstack-shim (dstack host agent)",
    command: [node, bin, "run", "--home", o.home, ...(o.logLevel ? ["--log-level", o.logLevel] : [])],
    requireDocker: true,
  });
}
