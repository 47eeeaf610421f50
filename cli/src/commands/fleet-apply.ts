// `dstack apply` of a fleet: read the SSH private keys named by `identity_file` on this machine
// (the server never reads paths of a user's configuration), show the summary, ask, apply, and
// for SSH fleets follow each host's provisioning until every host settles.
import { readFileSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import type { FleetConfig, ProxyJump } from "@dstack/proto";
import { InstanceStatus, type Instance } from "@dstack/proto/api";
import type { Client } from "../client/client.js";
import { DstackError } from "../client/errors.js";
import { formatConfigurationSummary } from "../format/configuration.js";
import { CliError, confirm, type CliIO } from "../io.js";

export interface FleetApplyOptions {
  yes?: boolean;
  force?: boolean;
  /** Return right after the apply instead of following SSH hosts' provisioning. */
  detach?: boolean;
}

function expandPath(path: string, io: Pick<CliIO, "cwd" | "env">): string {
  const home = io.env.HOME ?? "";
  const p = path === "~" ? home : path.startsWith("~/") ? `${home}${path.slice(1)}` : path;
  return isAbsolute(p) ? p : resolve(io.cwd, p);
}

function readKey(path: string, field: string, displayName: string, io: Pick<CliIO, "cwd" | "env">): string {
  const full = expandPath(path, io);
  let text: string;
  try {
    text = readFileSync(full, "utf8");
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (e as Error).message;
    throw new CliError(`${displayName}: ${field}: cannot read ${path}${full !== path ? ` (${full})` : ""}: ${why}`, 2);
  }
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text)) throw new CliError(`${displayName}: ${field}: ${path} is not a private key (no "-----BEGIN … PRIVATE KEY-----" line)`, 2);
  return text;
}

/**
 * A copy of the configuration with the `ssh_key` of every `identity_file` it names (fleet
 * default, per host, jump hosts) read from this machine. Unreadable files are CLI errors naming
 * the file and the field.
 */
export function withSshKeys(config: FleetConfig, displayName: string, io: Pick<CliIO, "cwd" | "env">): FleetConfig {
  const ssh = config.sshConfig;
  if (!ssh) return config;
  const jump = (p: ProxyJump | undefined, field: string): ProxyJump | undefined => (p ? { ...p, sshKey: readKey(p.identityFile, `${field}.identity_file`, displayName, io) } : undefined);
  return {
    ...config,
    sshConfig: {
      ...ssh,
      ...(ssh.identityFile ? { sshKey: readKey(ssh.identityFile, "ssh_config.identity_file", displayName, io) } : {}),
      ...(ssh.proxyJump ? { proxyJump: jump(ssh.proxyJump, "ssh_config.proxy_jump") } : {}),
      hosts: ssh.hosts.map((h, n) => ({
        ...h,
        ...(h.identityFile ? { sshKey: readKey(h.identityFile, `ssh_config.hosts[${n}].identity_file`, displayName, io) } : {}),
        ...(h.proxyJump ? { proxyJump: jump(h.proxyJump, `ssh_config.hosts[${n}].proxy_jump`) } : {}),
      })),
    },
  };
}

export async function applyFleet(client: Client, config: FleetConfig, displayName: string, options: FleetApplyOptions, io: CliIO): Promise<number> {
  io.stdout.write(formatConfigurationSummary(config, displayName));
  if (!config.name) throw new CliError(`${displayName}: a fleet needs a name (set \`name:\` or pass -n NAME)`, 2);
  const withKeys = withSshKeys(config, displayName, io);
  let exists = false;
  try {
    await client.fleets.get(config.name);
    exists = true;
  } catch (e) {
    if (!(e instanceof DstackError && e.kind === "not_found")) throw e;
  }
  const question = exists ? `Update the fleet ${config.name}?` : `Create the fleet ${config.name}?`;
  if (!(await confirm(io, question, { yes: options.yes ?? false }))) {
    io.stdout.write("\nExiting...\n");
    return 0;
  }
  const fleet = await client.fleets.apply(withKeys, { configurationPath: displayName, force: options.force ?? false });
  io.stdout.write(`Fleet ${fleet.name} ${exists ? "updated" : "created"}.\n`);
  if (!config.sshConfig || options.detach) return 0;
  return followSshHosts(client, fleet.name, sshHostKeys(config), io);
}

/** `user@hostname:port` of each host, as the server names them. */
export function sshHostKeys(config: FleetConfig): string[] {
  const ssh = config.sshConfig;
  return (ssh?.hosts ?? []).map((h) => `${h.user ?? ssh?.user ?? "root"}@${h.hostname}:${h.port ?? ssh?.port ?? 22}`);
}

/** One host's state in words: its provisioning step, `idle`, or `failed: why`. */
export function sshHostState(i: Instance): string {
  switch (i.status) {
    case InstanceStatus.TERMINATED:
      return `failed: ${i.terminationReasonMessage || "terminated"}`;
    case InstanceStatus.IDLE:
    case InstanceStatus.BUSY: {
      const s = i.status === InstanceStatus.IDLE ? "idle" : "busy";
      return i.statusMessage ? `${s} (${i.statusMessage})` : i.unreachable ? `${s} (unreachable)` : s;
    }
    default:
      return i.statusMessage || (InstanceStatus[i.status] ?? "pending").toLowerCase();
  }
}

const settled = (i: Instance) => i.status === InstanceStatus.IDLE || i.status === InstanceStatus.BUSY || i.status === InstanceStatus.TERMINATED;

/**
 * Prints each host's provisioning progress as it changes until every host of the configuration
 * settles (idle or failed). Ctrl-C stops following; the server goes on. Exit code 1 if a host failed.
 */
async function followSshHosts(client: Client, name: string, hosts: string[], io: CliIO): Promise<number> {
  io.stdout.write(`Provisioning ${hosts.length} SSH host${hosts.length === 1 ? "" : "s"} (Ctrl-C stops following; provisioning goes on)...\n`);
  let interrupted = false;
  const off = io.onInterrupt?.(() => (interrupted = true));
  const width = Math.max(...hosts.map((h) => h.length));
  const shown = new Map<string, string>();
  try {
    // The server reconciles right after the apply; give it a moment so old states are not taken as final.
    await new Promise((r) => setTimeout(r, 1000));
    for (;;) {
      const f = await client.fleets.get(name);
      const byHost = new Map(f.instances.filter((i) => i.sshHost).map((i) => [i.sshHost, i]));
      for (const h of hosts) {
        const i = byHost.get(h);
        const state = i ? sshHostState(i) : "pending";
        if (shown.get(h) !== state) {
          shown.set(h, state);
          io.stdout.write(`  ${h.padEnd(width)}  ${state}\n`);
        }
      }
      const all = hosts.map((h) => byHost.get(h));
      if (all.every((i) => i && settled(i))) {
        const failed = all.filter((i) => i!.status === InstanceStatus.TERMINATED).length;
        const ok = hosts.length === 1 ? "The host is ready." : `All ${hosts.length} hosts are ready.`;
        io.stdout.write(failed ? `${failed} of ${hosts.length} host${hosts.length === 1 ? "" : "s"} failed.\n` : `${ok}\n`);
        return failed ? 1 : 0;
      }
      if (interrupted) {
        io.stdout.write(`Stopped following; see \`dstack fleet get ${name}\`.\n`);
        return 0;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    off?.();
  }
}
