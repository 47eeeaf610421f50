// Wires the services together over one ORM and the settings; the API layer and the
// scheduler receive this object and nothing else.
import type { Orm } from "../db/database.js";
import type { Settings } from "../settings.js";
import { Encryptor } from "./encryption.js";
import { ProjectsService } from "./projects.js";
import { SecretsService } from "./secrets.js";
import { UsersService } from "./users.js";
import { EventBus } from "../scheduler/events.js";
import { realClock, type Clock } from "../scheduler/clock.js";
import { CodeService, DEFAULT_CODE_UPLOAD_LIMIT } from "./code.js";
import { FleetsService } from "./fleets.js";
import { InstancesService } from "./instances.js";
import { JobsService, envRunnerDialTimeoutS } from "./jobs.js";
import { LogsService } from "./logs.js";
import { OffersService } from "./offers.js";
import { RunsService } from "./runs.js";
import { ServiceProxyService } from "./service-proxy.js";
import { RequestStats, ServiceAutoscaler } from "./autoscaler.js";
import { TunnelsService } from "./tunnels.js";
import { MetricsService } from "./metrics.js";
import { SshFleetsService } from "./ssh-fleets.js";

export interface Services {
  users: UsersService;
  projects: ProjectsService;
  secrets: SecretsService;
  fleets: FleetsService;
  instances: InstancesService;
  offers: OffersService;
  runs: RunsService;
  jobs: JobsService;
  logs: LogsService;
  code: CodeService;
  /** Tunnels to running jobs (ssh, port forwards); the agent port's broker is plugged in with `useOpener`. */
  tunnels: TunnelsService;
  /** `/proxy/services/<project>/<run>/`: who may call a service, and a tunnel to a replica. */
  serviceProxy: ServiceProxyService;
  /** Services with `scaling`: request rates from the proxy turned into replica counts (started by main). */
  autoscaler: ServiceAutoscaler;
  /** Live CPU/memory/GPU usage of running jobs (`dstack metrics`); the runner links are plugged in with `useRunners`. */
  metrics: MetricsService;
  /** SSH fleet hosts' instances and provisioning state (backends/ssh does the SSH work). */
  sshFleets: SshFleetsService;
  /** Services publish here after each commit; the scheduler and watchers listen. */
  bus: EventBus;
  clock: Clock;
}

export interface ServiceOptions {
  bus?: EventBus;
  clock?: Clock;
  /** Code/file blob limit in bytes (0 = unlimited); default DSTACK_SERVER_CODE_UPLOAD_LIMIT or 2 MiB. */
  codeUploadLimit?: number;
  /** Seconds a placed job may wait for its runner to link home; default DSTACK_SERVER_RUNNER_DIAL_TIMEOUT or 600. */
  runnerDialTimeoutS?: number;
}

function envCodeLimit(): number {
  const raw = process.env.DSTACK_SERVER_CODE_UPLOAD_LIMIT;
  return raw !== undefined && /^\d+$/.test(raw) ? Number(raw) : DEFAULT_CODE_UPLOAD_LIMIT;
}

export function createServices(orm: Orm, settings: Settings, opts: ServiceOptions = {}): Services {
  const encryptor = new Encryptor(settings.encryptionKey);
  const users = new UsersService(orm, settings);
  const projects = new ProjectsService(orm, settings, encryptor);
  const secrets = new SecretsService(orm, projects, encryptor);
  const bus = opts.bus ?? new EventBus();
  const clock = opts.clock ?? realClock;
  const offers = new OffersService(orm, projects);
  const fleets = new FleetsService(orm, projects, bus, clock);
  const instances = new InstancesService(orm, projects, bus, clock);
  const runs = new RunsService(orm, projects, offers, bus, clock);
  const jobs = new JobsService(orm, offers, bus, clock, opts.runnerDialTimeoutS ?? envRunnerDialTimeoutS());
  const logs = new LogsService(orm, projects, bus, settings.homeDir);
  const code = new CodeService(orm, projects, opts.codeUploadLimit ?? envCodeLimit());
  const tunnels = new TunnelsService(orm, projects);
  const requestStats = new RequestStats();
  const serviceProxy = new ServiceProxyService(orm, users, projects, tunnels, requestStats);
  const autoscaler = new ServiceAutoscaler(orm, requestStats, bus, clock);
  const metrics = new MetricsService(tunnels);
  const sshFleets = new SshFleetsService(orm, bus, encryptor);
  return { users, projects, secrets, fleets, instances, offers, runs, jobs, logs, code, tunnels, serviceProxy, autoscaler, metrics, sshFleets, bus, clock };
}

/** First-start work, safe to repeat: the admin user and the default project. */
export async function bootstrap(services: Services): Promise<{ adminToken: string | null; adminCreated: boolean }> {
  const { admin, token, created } = await services.users.bootstrapAdmin();
  await services.projects.ensureDefaultProject(admin);
  return { adminToken: token, adminCreated: created };
}

export type { Principal, PublicKeyView, UserView } from "./users.js";
export type { ProjectView, MemberView } from "./projects.js";
export type { SecretView } from "./secrets.js";
