// What every handler module receives. Handlers are thin: validate the request, call one service
// method, map the view to the proto message; anything else belongs in services.
import type { Orm } from "../db/database.js";
import type { Services } from "../services/index.js";
import type { Settings } from "../settings.js";

export interface HandlerDeps {
  services: Services;
  settings: Settings;
  /** For streaming handlers that need their own queries; prefer services. */
  orm: Orm;
  /** Facts ServerService.GetServerInfo reports. */
  serverInfo: { version: string; caFingerprintSha256: string };
}
