// The database side of SSH fleets (backends/ssh/provisioner.ts does the SSH work): which hosts
// a fleet has, one instance per host with its `remoteConnection` (how the host is reached, where
// its shim is installed, how far provisioning got), and the per-host outcome on the instance.
import type { FleetConfig, ProxyJump, SshConfig } from "@dstack/proto";
import { InstanceStatus, InstanceTerminationReason } from "../domain/enums.js";
import { withTransaction, type Orm } from "../db/database.js";
import { Fleet, Instance, Project, build } from "../db/entities.js";
import { err } from "../errors.js";
import type { EventBus } from "../scheduler/events.js";
import type { Encryptor } from "./encryption.js";
import { isPrivateCidr, isPrivateIp, parseCidr } from "../backends/ssh/network.js";

/** What an SSH fleet instance records about its host (instances.remote_connection). */
export interface RemoteConnection {
  /** `user@hostname:port`: the host's identity within the fleet. */
  host: string;
  hostname: string;
  port: number;
  user: string;
  /** Where the bundles, the shim's home and its scripts live on the host. */
  installDir?: string;
  /** The systemd unit, when the shim runs under systemd; else a restart loop under nohup. */
  unit?: string;
  /** provisioning: being installed; installed: the shim was started; removed: uninstalled. */
  state: "provisioning" | "installed" | "removed";
  /** The private key the host was set up with, sealed (see SshFleetsService.openKey): a host
   *  removed from the configuration is still reached with it to be cleaned. */
  sshKey?: string;
  /** The identity_file the key came from (messages only). */
  identityFile?: string;
  /** The jump host, its key sealed likewise. */
  proxyJump?: { hostname: string; port: number; user: string; sshKey: string; identityFile?: string; hostKey?: string };
  /** The host key fingerprint (SHA256:…) seen at the first connection; another key is refused. */
  hostKey?: string;
  /** Where provisioning is ("connecting", "uploading the shim", …): the instance's status message. */
  step?: string;
  /** Why the last check of a set-up host failed (e.g. its host key changed); cleared when it passes. */
  problem?: string;
  /** The address jobs use between nodes (internal_ip, or the host's address in ssh_config.network). */
  internalIp?: string;
  /** The network that address is in (cluster placement needs one for all hosts). */
  net?: string;
  /** The host's own `blocks`, when the configuration sets them. */
  blocks?: number | "auto";
}

/** What an SSH host's instance uses instead of the shim's own guesses: its configured internal address. */
export function withSshHostFacts<H extends { internalIp?: string }>(remoteConnection: unknown, host: H): H {
  const r = remoteConnection as Partial<RemoteConnection> | null;
  return r?.internalIp ? { ...host, internalIp: r.internalIp } : host;
}

/** The host's own blocks (SSH hosts may override the fleet's). */
export function sshHostBlocks(remoteConnection: unknown): number | "auto" | undefined {
  return (remoteConnection as Partial<RemoteConnection> | null)?.blocks;
}

export interface SshInstanceState {
  id: string;
  name: string;
  status: InstanceStatus;
  deleted: boolean;
  remote: RemoteConnection;
}

export interface SshFleetState {
  id: string;
  projectId: string;
  name: string;
  deleted: boolean;
  config: FleetConfig;
  /** Every instance of the fleet with a remote connection, deleted ones included. */
  instances: SshInstanceState[];
}

const configOf = (f: Pick<Fleet, "spec">): FleetConfig => (f.spec as { configuration: FleetConfig }).configuration;

/** Binds a sealed key to its project (not the fleet's name: a deleted fleet is renamed, and its hosts
 *  are still cleaned with their keys): a ciphertext copied into another project does not open. */
const keyAad = (projectId: string) => `fleet-ssh-key/${projectId}`;

function mapKeys(ssh: SshConfig, f: (key: string | undefined, field: string, identityFile: string | undefined) => string | undefined): SshConfig {
  const jump = (p: ProxyJump | undefined, field: string): ProxyJump | undefined => {
    if (!p) return undefined;
    const { sshKey, ...rest } = p;
    const k = f(sshKey, field, p.identityFile);
    return k === undefined ? rest : { ...rest, sshKey: k };
  };
  const { sshKey, proxyJump, ...rest } = ssh;
  const k = f(sshKey, "ssh_config", ssh.identityFile);
  const pj = jump(proxyJump, "ssh_config.proxy_jump");
  return {
    ...rest,
    ...(k === undefined ? {} : { sshKey: k }),
    ...(pj ? { proxyJump: pj } : {}),
    hosts: ssh.hosts.map((h, n) => {
      const { sshKey: hk, proxyJump: hpj, ...hrest } = h;
      const k2 = f(hk, `ssh_config.hosts[${n}]`, h.identityFile);
      const j2 = jump(hpj, `ssh_config.hosts[${n}].proxy_jump`);
      return { ...hrest, ...(k2 === undefined ? {} : { sshKey: k2 }), ...(j2 ? { proxyJump: j2 } : {}) };
    }),
  };
}

/** An SSH host's instance in words: its provisioning step, a problem of its last check, or why it failed. */
export function sshStatusMessage(i: Pick<Instance, "status" | "remoteConnection" | "terminationReasonMessage">): string {
  const r = i.remoteConnection as Partial<RemoteConnection> | null;
  if (!r) return i.status === InstanceStatus.TERMINATED ? (i.terminationReasonMessage ?? "") : "";
  if (i.status === InstanceStatus.TERMINATED) return i.terminationReasonMessage ?? "";
  if (r.problem) return r.problem;
  if (i.status === InstanceStatus.PROVISIONING) return r.step ?? "";
  return "";
}

/** The configuration as the API shows it: private keys (sealed or not) left out. */
export function withoutSshKeys(config: FleetConfig): FleetConfig {
  return config.sshConfig ? { ...config, sshConfig: mapKeys(config.sshConfig, () => undefined) } : config;
}

export class SshFleetsService {
  constructor(
    private readonly orm: Orm,
    private readonly bus: EventBus,
    private readonly encryptor: Encryptor,
  ) {}

  /**
   * Checks that every host and jump host of an SSH fleet's configuration came with its private
   * key (the CLI reads `identity_file` on the user's machine; the server never reads those
   * paths) and seals the keys for storage. Other fleets pass through unchanged.
   */
  async sealKeys(projectName: string, config: FleetConfig): Promise<FleetConfig> {
    const ssh = config.sshConfig;
    if (!ssh) return config;
    const fleet = config.name ?? "";
    const bad = (reason: string) => err("DSTACK_INVALID_FLEET_CONFIG", { fleet, reason });
    const missing = (field: string, identityFile: string | undefined) =>
      bad(
        identityFile
          ? `${field}: identity_file ${identityFile} was sent without the key itself (ssh_key): the dstack CLI reads the file and sends its contents; the server does not read paths on its own disk`
          : `${field}: no identity_file`,
      );
    ssh.hosts.forEach((h, n) => {
      if (!h.sshKey && !ssh.sshKey) throw missing(`ssh_config.hosts[${n}] (${h.hostname})`, h.identityFile ?? ssh.identityFile);
    });
    if (ssh.hosts.length === 0) throw bad("ssh_config.hosts is empty");
    const net = ssh.network === undefined ? undefined : parseCidr(ssh.network);
    if (ssh.network !== undefined && !net) throw bad(`ssh_config.network ${ssh.network} is not an IPv4 network (e.g. 10.0.0.0/24)`);
    if (net && !isPrivateCidr(net)) throw bad(`ssh_config.network ${ssh.network} is not a private network (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10)`);
    // As dstack: internal_ip on every host or none, and not together with network.
    ssh.hosts.forEach((h, n) => {
      if (h.internalIp === undefined) return;
      if (net) throw bad(`ssh_config.hosts[${n}].internal_ip and ssh_config.network are mutually exclusive: set one of them`);
      if (!isPrivateIp(h.internalIp)) throw bad(`ssh_config.hosts[${n}].internal_ip ${h.internalIp} is not a private IPv4 address`);
    });
    const without = ssh.hosts.findIndex((h) => h.internalIp === undefined);
    if (without >= 0 && ssh.hosts.some((h) => h.internalIp !== undefined)) throw bad(`internal_ip must be set on every host or on none: ssh_config.hosts[${without}] (${ssh.hosts[without]!.hostname}) has none`);
    const project = await this.orm.em.fork().findOne(Project, { name: projectName, deleted: false }, { fields: ["id"] });
    if (!project) throw err("DSTACK_PROJECT_NOT_FOUND", { project: projectName });
    const aad = keyAad(project.id);
    return {
      ...config,
      sshConfig: mapKeys(ssh, (key, field, identityFile) => {
        if (key === undefined) {
          if (field.endsWith("proxy_jump")) throw missing(field, identityFile);
          return undefined;
        }
        return this.encryptor.encrypt(key, aad);
      }),
    };
  }

  /** A key sealed by sealKeys, in the clear (only the provisioner calls this, to log in). */
  openKey(fleet: Pick<SshFleetState, "projectId">, sealed: string): string {
    return this.encryptor.decrypt(sealed, keyAad(fleet.projectId));
  }

  /** Ids of fleets that have (or had) SSH hosts: live SSH fleets, and deleted ones whose hosts are not yet cleaned. */
  async fleetIds(): Promise<string[]> {
    const em = this.orm.em.fork();
    const fleets = await em.find(Fleet, {}, { fields: ["id", "spec", "deleted"] });
    const out: string[] = [];
    for (const f of fleets) {
      if (!configOf(f)?.sshConfig) continue;
      if (!f.deleted) out.push(f.id);
      else if ((await this.state(f.id))?.instances.some((i) => i.remote.state !== "removed")) out.push(f.id);
    }
    return out;
  }

  async state(fleetId: string): Promise<SshFleetState | null> {
    const em = this.orm.em.fork();
    const f = await em.findOne(Fleet, { id: fleetId });
    if (!f) return null;
    const rows = await em.find(Instance, { fleet: f.id, remoteConnection: { $ne: null } }, { orderBy: { instanceNum: "asc" } });
    return {
      id: f.id,
      projectId: f.project.id,
      name: f.name,
      deleted: f.deleted,
      config: configOf(f),
      instances: rows.map((i) => ({ id: i.id, name: i.name, status: i.status, deleted: i.deleted, remote: i.remoteConnection as unknown as RemoteConnection })),
    };
  }

  /** A new provisioning instance for a host of a live fleet. */
  async addHost(fleetId: string, remote: RemoteConnection): Promise<SshInstanceState> {
    const out = await withTransaction(this.orm, async (em) => {
      const fleet = await em.findOne(Fleet, { id: fleetId, deleted: false });
      if (!fleet) throw err("DSTACK_FLEET_NOT_FOUND", { fleet: fleetId, project: "?" });
      const num = await em.count(Instance, { fleet: fleet.id });
      const i = build(Instance, {
        fleet: em.getReference(Fleet, fleet.id, { wrapped: true }),
        project: em.getReference(Project, fleet.project.id, { wrapped: true }),
        name: `${fleet.name}-${num}`,
        instanceNum: num,
        status: InstanceStatus.PROVISIONING,
        backend: "remote",
        region: "remote",
        price: 0,
        remoteConnection: remote as unknown as Record<string, unknown>,
      });
      em.persist(i);
      await em.flush();
      return { state: { id: i.id, name: i.name, status: i.status, deleted: false, remote }, projectId: fleet.project.id };
    });
    this.bus.publish({ kind: "instance", id: out.state.id, projectId: out.projectId });
    return out.state;
  }

  /**
   * Records provisioning progress. `failed` ends the instance with an error (kept in the fleet
   * so its message shows; a re-apply retries the host); `retry` makes a failed one provisioning again.
   */
  async update(instanceId: string, remote: RemoteConnection, o: { failed?: string; retry?: boolean; retire?: boolean } = {}): Promise<void> {
    const projectId = await withTransaction(this.orm, async (em) => {
      const i = await em.findOne(Instance, { id: instanceId });
      if (!i) return null;
      i.remoteConnection = remote as unknown as Record<string, unknown>;
      if (o.failed !== undefined) {
        i.status = InstanceStatus.TERMINATED;
        i.terminationReason = InstanceTerminationReason.ERROR;
        i.terminationReasonMessage = o.failed;
      } else if (o.retry) {
        i.status = InstanceStatus.PROVISIONING;
        i.terminationReason = null;
        i.terminationReasonMessage = null;
      }
      if (o.retire) {
        i.status = InstanceStatus.TERMINATED;
        i.terminationReason ??= InstanceTerminationReason.TERMINATED_BY_USER;
        i.deleted = true;
      }
      await em.flush();
      return i.project.id;
    });
    if (projectId) this.bus.publish({ kind: "instance", id: instanceId, projectId });
  }
}
