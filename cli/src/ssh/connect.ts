// What an attached CLI sets up once its run is running: the `Host <run>` entry in
// `~/.dstack/ssh/config` (so `ssh <run>` works from any terminal), and local port forwards for
// the configuration's ports (`ports:` of tasks and dev environments, a service's `port`) plus
// `--port` overrides. Forwards live as long as the attached CLI; the entry outlives a detach and
// is removed when the CLI sees the run end.
import { fromProtoConfiguration, type PortMapping, type RunConfig } from "@dstack/proto";
import { BackendType, type Run } from "@dstack/proto/api";
import type { CliIO } from "../io.js";
import { hostAlias, INCLUDE_LINE, removeHostEntry, userConfigIncludesDstack, writeHostEntry } from "./config.js";
import { ensureSshIdentity } from "./keys.js";
import { mergePortMappings, startPortForwards, type PortForward, type PortForwards } from "./ports.js";
import type { RunTunnelServer } from "./tunnel.js";

export interface RunConnectionOptions {
  io: CliIO;
  server: RunTunnelServer;
  project: string;
  replica?: number;
  job?: number;
  /** `--port` mappings: they replace the configuration's for the same container port. */
  ports?: PortMapping[];
  /** Local address of the forwards; default 127.0.0.1. */
  host?: string;
}

/** The container ports the configuration publishes for job `job`: the ones attach forwards. */
export function configuredPorts(config: RunConfig, job = 0): PortMapping[] {
  switch (config.type) {
    case "task": {
      if (!config.groups?.length) return config.ports;
      // Jobs are numbered across groups in order.
      let first = 0;
      for (const g of config.groups) {
        if (job < first + g.nodes) return g.ports;
        first += g.nodes;
      }
      return [];
    }
    case "dev-environment":
      return config.ports;
    case "service":
      // Locally the service port is the container's (the `80` of `80:8000` is the gateway's).
      return [{ localPort: config.port.containerPort, containerPort: config.port.containerPort }];
  }
}

function runConfigOf(run: Run): RunConfig | null {
  const c = run.runSpec?.configuration;
  if (!c) return null;
  try {
    const config = fromProtoConfiguration(c);
    return config.type === "task" || config.type === "service" || config.type === "dev-environment" ? config : null;
  } catch {
    return null;
  }
}

/**
 * Whether the job runs on this machine's network: the server's own local fleet (host networking)
 * with the CLI talking to the server over loopback. Then the container's port P already is this
 * machine's port P, and a forward must not take it (the app would find it taken, or the tunnel
 * would come back to the forward).
 */
export function onThisMachine(run: Run, serverUrl: string, replica = 0, job = 0): boolean {
  const j = run.jobs.find((x) => x.jobSpec?.replicaNum === replica && x.jobSpec?.jobNum === job) ?? (replica === 0 && job === 0 ? run.jobs[0] : undefined);
  const sub = j?.jobSubmissions[j.jobSubmissions.length - 1];
  if (sub?.jobProvisioningData?.backend !== BackendType.LOCAL) return false;
  try {
    const host = new URL(serverUrl).hostname.replace(/^\[|\]$/g, "");
    return host === "localhost" || host === "::1" || /^127\./.test(host);
  } catch {
    return false;
  }
}

const url = (f: PortForward) => `http://${f.localHost.includes(":") ? `[${f.localHost}]` : f.localHost}:${f.localPort}`;

/** The SSH entry and port forwards of one attached run. */
export class RunConnection {
  private constructor(
    private readonly o: RunConnectionOptions,
    readonly alias: string,
    private readonly forwards: PortForwards | null,
  ) {}

  /** Writes the SSH entry, starts the forwards, and tells the user (on stderr). */
  static async open(run: Run, o: RunConnectionOptions): Promise<RunConnection> {
    const { io } = o;
    const name = run.runSpec?.runName ?? "";
    const alias = hostAlias(name, o.replica, o.job);
    const identity = await ensureSshIdentity(io.env);
    await writeHostEntry(io.env, {
      alias,
      project: o.project,
      run: name,
      ...(o.replica ? { replica: o.replica } : {}),
      ...(o.job ? { job: o.job } : {}),
      identityFile: identity.privateKeyPath,
    });
    io.stderr.write(`To connect: ssh ${alias}\n`);
    if (!(await userConfigIncludesDstack(io.env))) {
      io.stderr.write(`(~/.ssh/config does not include dstack's hosts yet: add this line at its top)\n  ${INCLUDE_LINE}\n`);
    }

    const config = runConfigOf(run);
    const wanted = mergePortMappings(config ? configuredPorts(config, o.job ?? 0) : [], o.ports);
    const local = onThisMachine(run, o.server.serverUrl, o.replica, o.job);
    // On this machine's network the same port is the container's own: forward from any other.
    const mappings = wanted.map((m) => (local && m.localPort === m.containerPort ? { containerPort: m.containerPort } : m));
    let forwards: PortForwards | null = null;
    if (mappings.length > 0) {
      forwards = await startPortForwards({
        ...o.server,
        project: o.project,
        run: name,
        ...(o.replica ? { replica: o.replica } : {}),
        ...(o.job ? { job: o.job } : {}),
        ...(o.host ? { host: o.host } : {}),
        mappings,
        onError: (f, message) => io.stderr.write(`Forwarding ${url(f)} → port ${f.containerPort} failed: ${message}\n`),
      });
      for (const f of forwards.forwards) {
        const asked = wanted.find((m) => m.containerPort === f.containerPort)?.localPort;
        const note =
          local && asked === f.containerPort
            ? ` (the run shares this machine's network: local port ${asked} is the container's own)`
            : asked !== undefined && asked !== f.localPort
              ? ` (local port ${asked} is in use)`
              : "";
        io.stderr.write(`Port ${f.containerPort} is forwarded to ${url(f)}${note}\n`);
      }
    }
    return new RunConnection(o, alias, forwards);
  }

  /** Stops the forwards; when the run ended, removes the SSH entry too. */
  async close(opts: { runEnded: boolean }): Promise<void> {
    await this.forwards?.close();
    if (opts.runEnded) await removeHostEntry(this.o.io.env, this.alias);
  }
}
