import { findSecretReferences } from "./grammar.js";
import type { AnyConfig } from "./types.js";

/** Names of the secrets a configuration references as `${{ secrets.NAME }}` (env values, registry_auth). */
export function collectSecretReferences(config: AnyConfig): string[] {
  const texts: string[] = [];
  if ("env" in config) texts.push(...Object.values(config.env.values));
  if ("registryAuth" in config && config.registryAuth) texts.push(config.registryAuth.username, config.registryAuth.password);
  return [...new Set(texts.flatMap(findSecretReferences))];
}
