// SSH fleets: for each host of a fleet with `ssh_config` the server logs in over SSH, checks the
// host (Linux on the bundle's architecture, a Docker engine that answers, the vendor tooling when
// it has NVIDIA/AMD GPUs, free disk), copies the
// portable shim and runner bundles (a tar stream into `tar -x` on the host), writes a one-time
// join token bound to the host's instance and starts the shim: a systemd unit when systemd runs
// and we are root, else a small restart loop under nohup. The instance is `provisioning` until
// its shim links and reports the host (then `idle`); a host that cannot be set up ends with a
// precise error on its instance, without holding up the others.
//
// Reconciles on fleet events (apply, delete) and at start: hosts already set up are left alone,
// failed ones are tried again, hosts gone from the configuration are uninstalled (shim stopped,
// install dir removed, identity revoked), and so are all hosts of a deleted fleet.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import type { Client } from "ssh2";
import type { SshConfig, SshHost } from "@dstack/proto";
import { shimSystemdUnit } from "@dstack/proto/link";
import type { JoinTokens } from "../../mesh/index.js";
import type { EventBus } from "../../scheduler/events.js";
import type { RemoteConnection, SshFleetsService, SshFleetState, SshInstanceState } from "../../services/ssh-fleets.js";
import type { AgentLogger } from "../../agents/dispatcher.js";
import { InstanceStatus } from "../../domain/enums.js";
import { DecryptionError } from "../../services/encryption.js";
import { GPU_PROBE, gpuToolingProblem, parseGpuProbe } from "./gpu.js";
import { parseCidr, parseIpAddr, pickInternalIp } from "./network.js";
import { connect, exec, shq, SshHostError, type SshEndpoint, type SshSession, type SshTarget } from "./remote.js";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
export const DEFAULT_SHIM_BUNDLE_DIR = join(REPO, "build", "shim-bundle");
export const DEFAULT_RUNNER_BUNDLE_DIR = join(REPO, "build", "runner-bundle");

export interface SshProvisionerOptions {
  sshFleets: SshFleetsService;
  bus: EventBus;
  joinTokens: Pick<JoinTokens, "create">;
  /** Revokes the shim identity of an instance (mesh.revoke("shim", id)). */
  revoke: (instanceId: string) => void;
  /** Where shims on the hosts dial (the server's --agent-url). */
  agentUrl: string;
  caFingerprint: string;
  shimBundleDir?: string;
  runnerBundleDir?: string;
  log: AgentLogger;
  /** How long one check or setup command may run on a host (default: DSTACK_SERVER_SSH_COMMAND_TIMEOUT seconds, else 60). */
  commandTimeoutMs?: number;
}

function envCommandTimeoutMs(): number {
  const raw = process.env.DSTACK_SERVER_SSH_COMMAND_TIMEOUT;
  return raw !== undefined && /^\d+$/.test(raw) && Number(raw) > 0 ? Number(raw) * 1000 : 60_000;
}

/** A host of the configuration with the fleet-level defaults applied. */
export interface ResolvedHost extends SshTarget {
  key: string;
  /** The host's `internal_ip` and `blocks` from the configuration. */
  internalIp?: string;
  blocks?: number | "auto";
  /** The key and jump host as recorded on the instance (keys sealed). */
  sealed: Pick<RemoteConnection, "sshKey" | "identityFile" | "proxyJump">;
}

type HostError = { key: string; hostname: string; port: number; user: string; message: string };

/** Sealed keys → usable keys; fails with a per-host message when a key does not open. */
type Opener = (sealed: string) => string;

function endpointOf(r: { hostname: string; port: number; user: string; sshKey: string; identityFile?: string; hostKey?: string }, open: Opener): SshEndpoint {
  return { hostname: r.hostname, port: r.port, user: r.user, privateKey: open(r.sshKey), ...(r.identityFile ? { identityFile: r.identityFile } : {}), ...(r.hostKey ? { hostKey: r.hostKey } : {}) };
}

export function resolveHosts(ssh: SshConfig, open: Opener): { hosts: ResolvedHost[]; errors: HostError[] } {
  const hosts: ResolvedHost[] = [];
  const errors: HostError[] = [];
  for (const h of ssh.hosts as SshHost[]) {
    const user = h.user ?? ssh.user ?? "root";
    const port = h.port ?? ssh.port ?? 22;
    const key = `${user}@${h.hostname}:${port}`;
    const own = h.sshKey !== undefined;
    const sshKey = h.sshKey ?? ssh.sshKey;
    const identityFile = own ? h.identityFile : (h.identityFile ?? ssh.identityFile);
    const pj = h.proxyJump ?? ssh.proxyJump;
    try {
      if (!sshKey) throw new SshHostError(`no private key for ${key}: set ssh_config.identity_file or the host's identity_file`);
      if (pj && !pj.sshKey) throw new SshHostError(`no private key for the jump host ${pj.user}@${pj.hostname} of ${key}`);
      const sealed: ResolvedHost["sealed"] = {
        sshKey,
        ...(identityFile ? { identityFile } : {}),
        ...(pj ? { proxyJump: { hostname: pj.hostname, port: pj.port ?? 22, user: pj.user, sshKey: pj.sshKey!, identityFile: pj.identityFile } } : {}),
      };
      hosts.push({
        key,
        sealed,
        ...targetOf({ hostname: h.hostname, port, user, ...sealed } as RemoteConnection, open),
        ...(h.internalIp ? { internalIp: h.internalIp } : {}),
        ...(h.blocks !== undefined ? { blocks: h.blocks } : {}),
      });
    } catch (e) {
      errors.push({ key, hostname: h.hostname, port, user, message: (e as Error).message });
    }
  }
  return { hosts, errors };
}

/** How to reach the host a remote connection records (its own sealed keys). */
function targetOf(r: Pick<RemoteConnection, "hostname" | "port" | "user" | "sshKey" | "identityFile" | "proxyJump" | "hostKey">, open: Opener): SshTarget {
  if (!r.sshKey) throw new SshHostError(`no private key recorded for ${r.user}@${r.hostname}:${r.port}`);
  return {
    ...endpointOf({ hostname: r.hostname, port: r.port, user: r.user, sshKey: r.sshKey, ...(r.identityFile ? { identityFile: r.identityFile } : {}), ...(r.hostKey ? { hostKey: r.hostKey } : {}) }, open),
    ...(r.proxyJump ? { proxyJump: endpointOf(r.proxyJump, open) } : {}),
  };
}

/** Free space a host keeps beyond the bundles (MB). */
export const MIN_FREE_MB = 200;

/** The host keys recorded for an instance, kept while the host (and jump host) stay the same. */
function pinsOf(r: RemoteConnection, h: ResolvedHost): Pick<RemoteConnection, "hostKey" | "proxyJump"> {
  const pj = h.sealed.proxyJump;
  const samePj = pj && r.proxyJump && r.proxyJump.hostname === pj.hostname && r.proxyJump.port === pj.port;
  return {
    ...(r.hostKey ? { hostKey: r.hostKey } : {}),
    ...(pj ? { proxyJump: { ...pj, ...(samePj && r.proxyJump!.hostKey ? { hostKey: r.proxyJump!.hostKey } : {}) } } : {}),
  };
}

/** The target with the recorded host keys to check. */
function withPins(h: ResolvedHost, r: RemoteConnection): ResolvedHost {
  return {
    ...h,
    ...(r.hostKey ? { hostKey: r.hostKey } : {}),
    ...(h.proxyJump ? { proxyJump: { ...h.proxyJump, ...(r.proxyJump?.hostKey ? { hostKey: r.proxyJump.hostKey } : {}) } } : {}),
  };
}

const UNAME_ARCH: Record<string, string> = { x64: "x86_64", arm64: "aarch64" };

/** The start script on the host: join with the one-time token the first time, run afterwards. */
export function startScript(o: { agentUrl: string; caFingerprint: string }): string {
  const bin = '"$dir/shim-bundle/bin/dstack-shim"';
  const common = '--home "$dir/home" --runner-bundle "$dir/runner-bundle"';
  return [
    "#!/bin/sh",
    "# dstack-shim of an SSH fleet host (written by the dstack server). First start: join with the",
    "# one-time token; later starts: run with the identity the join stored in home/.",
    'dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd) || exit 1',
    'if [ -f "$dir/home/identity.json" ]; then',
    `  exec ${bin} run ${common}`,
    "fi",
    `exec ${bin} join --server ${shq(o.agentUrl)} --ca-sha256 ${shq(o.caFingerprint)} --token "$(cat "$dir/join-token")" ${common}`,
    "",
  ].join("\n");
}

/** Keeps start.sh running where there is no systemd; SIGTERM stops the shim and the loop. */
export const SUPERVISE_SCRIPT = [
  "#!/bin/sh",
  "# Restart loop for the dstack shim where systemd is not used (written by the dstack server).",
  'dir=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd) || exit 1',
  'echo $$ >"$dir/supervisor.pid"',
  "stopping=",
  "child=",
  'trap \'stopping=1; [ -n "$child" ] && kill -TERM "$child" 2>/dev/null\' TERM INT',
  'while [ -z "$stopping" ]; do',
  '  sh "$dir/start.sh" >>"$dir/shim.log" 2>&1 </dev/null &',
  "  child=$!",
  '  wait "$child"',
  '  if [ -n "$stopping" ]; then wait "$child" 2>/dev/null; break; fi',
  "  sleep 2",
  "done",
  'rm -f "$dir/supervisor.pid"',
  "",
].join("\n");

/** The unit of a host's shim (root and systemd); same text as before the shared builder, so installed hosts match. */
function systemdUnit(dir: string): string {
  return shimSystemdUnit({ description: "dstack-shim (dstack host agent of an SSH fleet)", command: ["/bin/sh", `${dir}/start.sh`], logFile: `${dir}/shim.log` });
}

const firstLine = (s: string): string => s.trim().split("\n").find((l) => l.trim() !== "")?.trim() ?? "";

function dirSize(p: string): number {
  const s = statSync(p);
  return s.isDirectory() ? readdirSync(p).reduce((n, e) => n + dirSize(join(p, e)), 0) : s.size;
}

export class SshFleetProvisioner {
  private readonly shimDir: string;
  private readonly runnerDir: string;
  private readonly chains = new Map<string, Promise<void>>();
  private readonly queued = new Set<string>();
  private readonly sshFleetIds = new Set<string>();
  private unsubscribe: (() => void) | null = null;
  private stopped = false;

  private readonly commandTimeoutMs: number;

  constructor(private readonly o: SshProvisionerOptions) {
    this.commandTimeoutMs = o.commandTimeoutMs ?? envCommandTimeoutMs();
    this.shimDir = o.shimBundleDir ?? DEFAULT_SHIM_BUNDLE_DIR;
    this.runnerDir = o.runnerBundleDir ?? DEFAULT_RUNNER_BUNDLE_DIR;
  }

  /** Listens for fleet changes and reconciles every SSH fleet once. */
  async start(): Promise<void> {
    this.unsubscribe = this.o.bus.subscribe((e) => {
      // Apply publishes a "fleet" event; delete publishes the fleet's id as an "instance" event.
      if (e.kind === "fleet" || (e.kind === "instance" && this.sshFleetIds.has(e.id))) this.schedule(e.id);
    });
    for (const id of await this.o.sshFleets.fleetIds()) {
      this.sshFleetIds.add(id);
      this.schedule(id);
    }
  }

  /** Stops listening and waits for the reconciles under way. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.unsubscribe?.();
    await Promise.allSettled([...this.chains.values()]);
  }

  /** Resolves once every reconcile queued so far is done (tests). */
  async idle(): Promise<void> {
    while (this.chains.size > 0) await Promise.allSettled([...this.chains.values()]);
  }

  private schedule(fleetId: string): void {
    if (this.stopped || this.queued.has(fleetId)) return;
    this.queued.add(fleetId);
    const prev = this.chains.get(fleetId) ?? Promise.resolve();
    const next = prev
      .then(async () => {
        this.queued.delete(fleetId);
        await this.reconcile(fleetId);
      })
      .catch((e: unknown) => this.o.log.error({ err: e, fleet: fleetId }, "ssh fleet: reconcile failed"))
      .finally(() => {
        if (this.chains.get(fleetId) === next) this.chains.delete(fleetId);
      });
    this.chains.set(fleetId, next);
  }

  private async reconcile(fleetId: string): Promise<void> {
    const fleet = await this.o.sshFleets.state(fleetId);
    if (!fleet || (!fleet.config?.sshConfig && fleet.instances.length === 0)) return;
    this.sshFleetIds.add(fleetId);
    if (fleet.deleted) {
      await Promise.allSettled(fleet.instances.filter((i) => i.remote.state !== "removed").map((i) => this.teardown(fleet, i)));
      return;
    }
    const { hosts, errors } = resolveHosts(fleet.config.sshConfig ?? { hosts: [] }, this.opener(fleet));
    this.clusterNets.delete(fleet.id);
    const live = fleet.instances.filter((i) => !i.deleted);
    const byKey = new Map(live.map((i) => [i.remote.host, i]));
    const wanted = new Set([...hosts.map((h) => h.key), ...errors.map((e) => e.key)]);
    const work: Promise<void>[] = [];
    for (const i of live) if (!wanted.has(i.remote.host)) work.push(this.teardown(fleet, i));
    for (const e of errors) {
      const remote: RemoteConnection = { host: e.key, hostname: e.hostname, port: e.port, user: e.user, state: "provisioning" };
      const i = byKey.get(e.key) ?? (await this.o.sshFleets.addHost(fleet.id, remote));
      await this.o.sshFleets.update(i.id, remote, { failed: e.message });
    }
    for (const h of hosts) {
      const existing = byKey.get(h.key);
      const remote: RemoteConnection = { host: h.key, hostname: h.hostname, port: h.port, user: h.user, state: "provisioning", ...h.sealed };
      if (existing && existing.status !== InstanceStatus.TERMINATED && existing.remote.state === "installed") {
        // Set up before: check it over SSH (host key, install marker, shim alive); reinstall only if needed.
        const inst = { ...existing, remote: { ...existing.remote, ...h.sealed, ...pinsOf(existing.remote, h) } };
        work.push(this.check(fleet, inst, withPins(h, inst.remote)));
        continue;
      }
      let inst: SshInstanceState;
      if (existing) {
        inst = { ...existing, remote: { ...existing.remote, ...remote, ...pinsOf(existing.remote, h), step: "connecting" } };
        await this.o.sshFleets.update(inst.id, inst.remote, { retry: true });
      } else inst = await this.o.sshFleets.addHost(fleet.id, { ...remote, step: "connecting" });
      work.push(this.provision(fleet, inst, withPins(h, inst.remote)));
    }
    await Promise.allSettled(work);
  }

  /** What the install on a host must match: the bundles' inputs and the scripts we write. */
  private installHash(useSystemd: boolean, dir: string): string {
    const inputs = (d: string) => (JSON.parse(readFileSync(join(d, "bundle.json"), "utf8")) as { inputs?: string }).inputs ?? String(statSync(join(d, "bundle.json")).mtimeMs);
    return createHash("sha256")
      .update([inputs(this.shimDir), inputs(this.runnerDir), startScript({ agentUrl: this.o.agentUrl, caFingerprint: this.o.caFingerprint }), useSystemd ? systemdUnit(dir) : SUPERVISE_SCRIPT].join("\0"))
      .digest("hex");
  }

  /**
   * A host set up before, applied again: leave it alone when its host key, install marker and
   * shim process are as we left them; reinstall (keeping the shim's identity) otherwise.
   */
  private async check(fleet: SshFleetState, inst: SshInstanceState, h: ResolvedHost): Promise<void> {
    const r = inst.remote;
    let session: SshSession | null = null;
    try {
      session = await connect(h);
      const dir = r.installDir!;
      const alive = r.unit ? `systemctl is-active --quiet ${shq(r.unit)}` : `kill -0 "$(cat ${shq(`${dir}/supervisor.pid`)} 2>/dev/null)" 2>/dev/null`;
      const out = await exec(session.client, `cat ${shq(`${dir}/install.sha256`)} 2>/dev/null; ${alive} && echo alive || echo dead`, undefined, { timeoutMs: this.commandTimeoutMs, host: h.key });
      const lines = out.stdout.trim().split("\n");
      const state = lines.pop();
      const hash = lines[0] ?? "";
      if (hash === this.installHash(!!r.unit, dir) && state === "alive") {
        // Unchanged: nothing to do but keep the keys of this apply and clear an old problem.
        await this.o.sshFleets.update(inst.id, { ...r, problem: undefined });
        return;
      }
      this.o.log.info({ fleet: fleet.name, host: h.key, instance: inst.name, changed: hash ? "install" : "missing", state }, "ssh fleet: reinstalling the shim");
    } catch (e) {
      // The instance keeps running on its linked shim; the problem shows on it until solved.
      const message = e instanceof SshHostError ? e.message : `checking ${h.key} failed: ${(e as Error)?.message ?? String(e)}`;
      this.o.log.warn({ fleet: fleet.name, host: h.key, instance: inst.name, error: message }, "ssh fleet: host check failed");
      await this.o.sshFleets.update(inst.id, { ...r, problem: message });
      return;
    } finally {
      session?.close();
    }
    await this.provision(fleet, inst, h, { reinstall: true });
  }

  private async provision(fleet: SshFleetState, inst: SshInstanceState, h: ResolvedHost, o: { reinstall?: boolean } = {}): Promise<void> {
    const log = this.o.log;
    log.info({ fleet: fleet.name, host: h.key, instance: inst.name, reinstall: !!o.reinstall }, "ssh fleet: provisioning host");
    let remote: RemoteConnection = { ...inst.remote, problem: undefined };
    const step = async (s: string) => {
      remote = { ...remote, step: s };
      await this.o.sshFleets.update(inst.id, remote);
    };
    let session: SshSession | null = null;
    try {
      if (!o.reinstall) await step("connecting");
      session = await connect(h);
      // First connection: remember the host keys; later ones must present the same.
      remote = { ...remote, hostKey: session.hostKey, ...(remote.proxyJump && session.jumpHostKey ? { proxyJump: { ...remote.proxyJump, hostKey: session.jumpHostKey } } : {}) };
      if (!o.reinstall) await step("checking the host");
      const c = session.client;
      // Checks and small writes have a deadline; the bundle upload (below) has none.
      const run = async (cmd: string, stdin?: Readable) => exec(c, cmd, stdin, { timeoutMs: this.commandTimeoutMs, host: h.key });
      const manifest = JSON.parse(readFileSync(join(this.shimDir, "bundle.json"), "utf8")) as { arch: string; node: string };
      const wantArch = UNAME_ARCH[manifest.arch] ?? manifest.arch;
      const uname = (await run("uname -sm")).stdout.trim();
      if (uname !== `Linux ${wantArch}`) throw new SshHostError(`unsupported host ${h.key}: \`uname -sm\` says '${uname}'; the shim bundle is built for Linux ${wantArch}`);
      const docker = await run("docker version --format '{{.Server.Version}}'");
      if (docker.code !== 0) throw new SshHostError(`no Docker engine answers on ${h.key}: ${firstLine(docker.stderr) || firstLine(docker.stdout) || `docker version exited with ${docker.code}`}`);
      // GPUs need their vendor's tooling (driver tool, Docker runtime); a host without GPUs needs none.
      const probe = await run(GPU_PROBE).catch((e: unknown) => {
        // A hung nvidia-smi (a wedged driver) ends here; name the check, not the script's first words.
        throw e instanceof SshHostError && e.message.includes("did not finish") ? new SshHostError(`the GPU check (nvidia-smi, docker info) did not finish within ${Math.round(this.commandTimeoutMs / 1000)} s on ${h.key}`) : e;
      });
      const gpu = gpuToolingProblem(parseGpuProbe(probe.stdout), h.key);
      if (gpu) throw new SshHostError(gpu);
      // The address jobs use between nodes, and (cluster placement) one network for all hosts.
      const addrs = await run("ip -o -4 addr show 2>/dev/null");
      const ssh = fleet.config.sshConfig;
      const picked = pickInternalIp(parseIpAddr(addrs.stdout), { internalIp: h.internalIp, network: ssh?.network ? (parseCidr(ssh.network) ?? undefined) : undefined });
      if ("error" in picked) {
        // Only a configuration that asks for an address makes a host without one (or without `ip`) fail.
        if (h.internalIp || ssh?.network || fleet.config.placement === "cluster") throw new SshHostError(`${h.key}: ${addrs.code !== 0 ? "cannot list the host's addresses (`ip -o -4 addr show` failed; install iproute2)" : picked.error}`);
      } else {
        if (fleet.config.placement === "cluster") this.claimClusterNet(fleet, h.key, picked.net);
        remote = { ...remote, internalIp: picked.ip, net: picked.net };
      }
      remote = { ...remote, ...(h.blocks !== undefined ? { blocks: h.blocks } : { blocks: undefined }) };
      const who = (await run('id -u; printf "%s\\n" "$HOME"; command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] && echo systemd || echo nohup')).stdout.trim().split("\n");
      const root = who[0] === "0";
      const base = root ? "/opt/dstack" : `${who[1] || "/tmp"}/.dstack`;
      const dir = `${base}/shim-${inst.id}`;
      const useSystemd = root && who[2] === "systemd";
      remote = { ...remote, installDir: dir, ...(useSystemd ? { unit: `dstack-shim-${inst.id}` } : {}) };
      await this.o.sshFleets.update(inst.id, remote);

      // Disk: the bundles (the runner shares the shim's node and libraries when they match) and room to spare.
      const runner = JSON.parse(readFileSync(join(this.runnerDir, "bundle.json"), "utf8")) as { arch: string; node: string };
      const shareNode = runner.node === manifest.node && runner.arch === manifest.arch;
      const needMb = Math.ceil((dirSize(this.shimDir) + (shareNode ? dirSize(this.runnerDir) - dirSize(join(this.runnerDir, "bin")) - dirSize(join(this.runnerDir, "lib")) : dirSize(this.runnerDir))) / 1048576) + MIN_FREE_MB;
      const df = await run(`mkdir -p ${shq(base)} && df -Pk ${shq(base)} | awk 'NR==2 {print $4}'`);
      const freeMb = Math.floor(Number(df.stdout.trim()) / 1024);
      if (df.code !== 0) throw new SshHostError(`cannot prepare ${base} on ${h.key}: ${firstLine(df.stderr)}`);
      if (Number.isFinite(freeMb) && freeMb < needMb) throw new SshHostError(`not enough disk space on ${h.key}: ${freeMb} MB free in ${base}, the shim needs ${needMb} MB`);

      // A reinstall stops the running shim first; its home (identity) stays.
      if (o.reinstall) await this.stopShim(c, remote);
      await step("uploading the shim");
      await this.upload(c, h, dir, shareNode);
      await step("starting the shim");
      const token = await this.o.joinTokens.create({ projectId: fleet.projectId, fleetId: fleet.id, kind: "shim", boundId: inst.id });
      const put = async (path: string, text: string, mode: string) => {
        const r = await run(`umask 077 && cat >${shq(path)} && chmod ${mode} ${shq(path)}`, Readable.from([Buffer.from(text)]));
        if (r.code !== 0) throw new SshHostError(`cannot write ${path} on ${h.key}: ${firstLine(r.stderr)}`);
      };
      await put(`${dir}/join-token`, token.token + "\n", "600");
      await put(`${dir}/start.sh`, startScript({ agentUrl: this.o.agentUrl, caFingerprint: this.o.caFingerprint }), "700");
      if (useSystemd) {
        await put(`/etc/systemd/system/${remote.unit}.service`, systemdUnit(dir), "644");
        const r = await run(`systemctl daemon-reload && systemctl enable ${shq(remote.unit!)} && systemctl restart ${shq(remote.unit!)}`);
        if (r.code !== 0) throw new SshHostError(`cannot start the shim's systemd unit on ${h.key}: ${firstLine(r.stderr)}`);
      } else {
        await put(`${dir}/supervise.sh`, SUPERVISE_SCRIPT, "700");
        const setsid = "$(command -v setsid || true)";
        // A simple command in the background: no shell lingers as its parent.
        const r = await run(`nohup ${setsid} sh ${shq(`${dir}/supervise.sh`)} >/dev/null 2>&1 </dev/null &`);
        if (r.code !== 0) throw new SshHostError(`cannot start the shim on ${h.key}: ${firstLine(r.stderr)}`);
      }
      // Written last: a host whose marker matches was set up completely.
      await put(`${dir}/install.sha256`, this.installHash(useSystemd, dir) + "\n", "600");
      remote = { ...remote, state: "installed", step: "waiting for the shim" };
      await this.o.sshFleets.update(inst.id, remote);
      log.info({ fleet: fleet.name, host: h.key, instance: inst.name, dir, systemd: useSystemd }, "ssh fleet: shim started; waiting for it to link");
    } catch (e) {
      const message = e instanceof SshHostError ? e.message : `provisioning ${h.key} failed: ${(e as Error)?.message ?? String(e)}`;
      log.warn({ fleet: fleet.name, host: h.key, instance: inst.name, error: message }, "ssh fleet: host failed");
      await this.o.sshFleets.update(inst.id, { ...remote, step: undefined }, { failed: message });
    } finally {
      session?.close();
    }
  }

  /** Network of each cluster fleet, as its first host found it: every other host must share it. */
  private readonly clusterNets = new Map<string, { net: string; host: string }>();

  private claimClusterNet(fleet: SshFleetState, host: string, net: string): void {
    const first = this.clusterNets.get(fleet.id) ?? fleet.instances.map((i) => i.remote).find((r) => r.net && r.host !== host && r.state === "installed");
    const owner = first ? { net: first.net!, host: first.host } : { net, host };
    if (!this.clusterNets.has(fleet.id)) this.clusterNets.set(fleet.id, owner);
    if (owner.net !== net) {
      throw new SshHostError(
        `placement: cluster needs every host in one network: ${host} is in ${net}, ${owner.host} in ${owner.net}; set ssh_config.network (or internal_ip per host) to the network they share`,
      );
    }
  }

  /** Stops the shim a host runs (systemd unit or restart loop), waiting for it to exit. */
  private async stopShim(c: Client, r: RemoteConnection): Promise<void> {
    const dir = r.installDir!;
    if (r.unit) {
      await exec(c, `systemctl stop ${shq(r.unit)} >/dev/null 2>&1; true`);
      return;
    }
    await exec(
      c,
      [
        `p=$(cat ${shq(`${dir}/supervisor.pid`)} 2>/dev/null)`,
        'if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null; i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 60 ]; do sleep 0.5; i=$((i+1)); done; fi',
        // Anything still started from the install dir (a shim that ignored SIGTERM) goes too; the
        // pattern's first character is bracketed so it does not match this command's own shell.
        `pkill -KILL -f ${shq(`[${dir[0]}]${dir.slice(1)}/`)} 2>/dev/null; true`,
      ].join("; "),
    );
  }

  private async upload(c: Client, h: ResolvedHost, dir: string, shareNode: boolean): Promise<void> {
    if (!existsSync(join(this.shimDir, "shim.js"))) throw new Error(`no shim bundle in ${this.shimDir}: build it with \`npm run build:shim\``);
    if (!existsSync(join(this.runnerDir, "runner.js"))) throw new Error(`no runner bundle in ${this.runnerDir}: build it with \`npm run build:runner\``);
    const shim = basename(this.shimDir);
    const runner = basename(this.runnerDir);
    // GNU tar on the server side; --transform names the two dirs the same on every host.
    const args = [
      "-c",
      "--exclude=.stamp",
      `--transform=s,^${shim},shim-bundle,`,
      `--transform=s,^${runner},runner-bundle,`,
      "-C", dirname(this.shimDir), shim,
      // Sharing the shim's Node: everything of the runner's but its bin/ and lib/ (which are hard links made below).
      ...(shareNode ? [`--exclude=${runner}/bin`, `--exclude=${runner}/lib`] : []),
      "-C", dirname(this.runnerDir), runner,
    ];
    const tar = spawn("tar", args, { stdio: ["ignore", "pipe", "pipe"] });
    let tarErr = "";
    tar.stderr.on("data", (d: Buffer) => (tarErr += d.toString()));
    const tarDone = new Promise<number>((ok) => tar.once("close", (code) => ok(code ?? -1)));
    // home/ (the shim's identity) survives a reinstall; the rest is replaced.
    const r = await exec(c, `mkdir -p ${shq(dir)}/home && rm -rf ${shq(dir)}/shim-bundle ${shq(dir)}/runner-bundle && tar -x -C ${shq(dir)}`, tar.stdout);
    const code = await tarDone;
    if (code !== 0) throw new Error(`tar of the bundles failed: ${firstLine(tarErr)}`);
    if (r.code !== 0) throw new SshHostError(`cannot unpack the shim on ${h.key}: ${firstLine(r.stderr) || `tar -x exited with ${r.code}`}${/not found/.test(r.stderr) ? " (the host needs tar)" : ""}`);
    if (shareNode) {
      const link = await exec(
        c,
        `cd ${shq(dir)} && mkdir -p runner-bundle/bin runner-bundle/lib && ln -f shim-bundle/bin/node runner-bundle/bin/node && for f in shim-bundle/lib/*; do ln -f "$f" runner-bundle/lib/; done`,
      );
      if (link.code !== 0) throw new SshHostError(`cannot lay out the runner bundle on ${h.key}: ${firstLine(link.stderr)}`);
    }
  }

  private async teardown(fleet: SshFleetState, inst: SshInstanceState): Promise<void> {
    const r = inst.remote;
    this.o.log.info({ fleet: fleet.name, host: r.host, instance: inst.name }, "ssh fleet: removing the shim from the host");
    let session: Awaited<ReturnType<typeof connect>> | null = null;
    try {
      if (r.installDir) {
        // The key the host was set up with; records older than sealed keys use the fleet's default.
        const target = targetOf(r.sshKey ? r : { ...r, ...this.fleetDefaults(fleet) }, this.opener(fleet));
        session = await connect(target);
        const dir = r.installDir;
        await this.stopShim(session.client, r);
        const cmd = r.unit ? `systemctl disable ${shq(r.unit)} >/dev/null 2>&1; rm -f ${shq(`/etc/systemd/system/${r.unit}.service`)}; systemctl daemon-reload; rm -rf ${shq(dir)}` : `rm -rf ${shq(dir)}`;
        const out = await exec(session.client, cmd);
        if (out.code !== 0) throw new SshHostError(`cleanup on ${r.host} failed: ${firstLine(out.stderr)}`);
      }
    } catch (e) {
      this.o.log.warn({ fleet: fleet.name, host: r.host, error: (e as Error).message }, "ssh fleet: could not clean the host; its identity is revoked anyway");
    } finally {
      session?.close();
    }
    this.o.revoke(inst.id);
    await this.o.sshFleets.update(inst.id, { ...r, state: "removed" }, { retire: true });
  }

  private fleetDefaults(fleet: SshFleetState): Pick<RemoteConnection, "sshKey" | "identityFile" | "proxyJump"> {
    const ssh = fleet.config.sshConfig;
    const pj = ssh?.proxyJump;
    return {
      ...(ssh?.sshKey ? { sshKey: ssh.sshKey } : {}),
      ...(ssh?.identityFile ? { identityFile: ssh.identityFile } : {}),
      ...(pj?.sshKey ? { proxyJump: { hostname: pj.hostname, port: pj.port ?? 22, user: pj.user, sshKey: pj.sshKey, identityFile: pj.identityFile } } : {}),
    };
  }

  private opener(fleet: SshFleetState): Opener {
    return (sealed) => {
      try {
        return this.o.sshFleets.openKey(fleet, sealed);
      } catch (e) {
        if (e instanceof DecryptionError) throw new SshHostError(`the stored private key cannot be decrypted (${e.message}); apply the fleet again`);
        throw e;
      }
    };
  }
}
