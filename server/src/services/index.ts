// Wires the services together over one ORM and the settings; the API layer and the
// scheduler receive this object and nothing else.
import type { Orm } from "../db/database.js";
import type { Settings } from "../settings.js";
import { Encryptor } from "./encryption.js";
import { ProjectsService } from "./projects.js";
import { SecretsService } from "./secrets.js";
import { UsersService } from "./users.js";

export interface Services {
  users: UsersService;
  projects: ProjectsService;
  secrets: SecretsService;
}

export function createServices(orm: Orm, settings: Settings): Services {
  const encryptor = new Encryptor(settings.encryptionKey);
  const users = new UsersService(orm, settings);
  const projects = new ProjectsService(orm, settings, encryptor);
  const secrets = new SecretsService(orm, projects, encryptor);
  return { users, projects, secrets };
}

/** First-start work, safe to repeat: the admin user and the default project. */
export async function bootstrap(services: Services): Promise<{ adminToken: string | null; adminCreated: boolean }> {
  const { admin, token, created } = await services.users.bootstrapAdmin();
  await services.projects.ensureDefaultProject(admin);
  return { adminToken: token, adminCreated: created };
}

export type { Principal, UserView } from "./users.js";
export type { ProjectView, MemberView } from "./projects.js";
export type { SecretView } from "./secrets.js";
