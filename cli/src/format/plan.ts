// The run plan `dstack apply` prints before asking: the run's properties (project, user, type,
// resources, policies) and then the best offers.
import type { RunConfig } from "@dstack/proto";
import type { RunPlan } from "@dstack/proto/api";
import { formatDuration, formatResources } from "./configuration.js";
import { formatOffersTable, NO_FLEETS_WARNING, NO_OFFERS_WARNING } from "./offers.js";
import { noColor, type Palette } from "./style.js";

export function formatRunPlan(plan: RunPlan, config: RunConfig, opts: { configurationPath?: string; noFleets?: boolean; palette?: Palette; maxOffers?: number } = {}): string {
  const p = opts.palette ?? noColor;
  const type = config.type === "task" ? `task (nodes=${config.nodes})` : config.type;
  const retry = config.retry ? `${config.retry.onEvents.join(", ")} for ${formatDuration(config.retry.duration)}` : "off";
  const rows: [string, string][] = [
    ["Project", plan.projectName],
    ["User", plan.user],
    ...(opts.configurationPath ? ([["Configuration", opts.configurationPath]] as [string, string][]) : []),
    ["Type", type],
    ["Resources", formatResources(config.resources)],
    ["Spot policy", config.spotPolicy],
    ["Max price", config.maxPrice !== undefined ? `$${config.maxPrice}` : "off"],
    ["Retry policy", retry],
    ...(config.creationPolicy !== "reuse-or-create" ? ([["Creation policy", config.creationPolicy]] as [string, string][]) : []),
    ["Idle duration", formatDuration(config.idleDuration)],
    ["Max duration", formatDuration(config.maxDuration)],
    ...(config.type === "dev-environment" ? ([["Inactivity duration", formatDuration(config.inactivityDuration ?? "off")]] as [string, string][]) : []),
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  let out = rows.map(([k, v]) => ` ${p.bold(k.padEnd(width))}  ${v}\n`).join("") + "\n";
  const jobPlan = plan.jobPlans[0];
  const offers = (jobPlan?.offers ?? []).slice(0, opts.maxOffers ?? 3);
  if (offers.length > 0) out += formatOffersTable(offers, { total: Math.max(jobPlan?.totalOffers ?? 0, offers.length), palette: p }) + "\n";
  else out += (opts.noFleets ? p.red(NO_FLEETS_WARNING) : p.yellow(NO_OFFERS_WARNING)) + "\n";
  return out;
}

/** dstack's names for changed run spec fields; others show as they are. */
const FRIENDLY_SPEC_FIELDS: Record<string, string> = {
  repo_id: "Repo ID",
  repo_code_hash: "Repo files",
  repo_data: "Repo state (branch, commit, or other)",
  ssh_key_pub: "Public SSH key",
};

/**
 * The plan's changed fields as dstack lists them: run spec fields by name, configuration
 * properties nested under "Configuration properties:"; null when nothing changed.
 */
export function formatSpecDiff(changedFields: readonly string[]): string | null {
  if (changedFields.length === 0) return null;
  const lines: string[] = [];
  const conf = changedFields.filter((f) => f.startsWith("configuration.")).map((f) => f.slice("configuration.".length));
  for (const f of changedFields) {
    if (f.startsWith("configuration.")) continue;
    lines.push(`  - ${FRIENDLY_SPEC_FIELDS[f] ?? f}`);
  }
  if (conf.includes("type")) lines.push("  - Configuration type");
  else if (conf.length > 0) lines.push("  - Configuration properties:", ...conf.map((c) => `    - ${c}`));
  return lines.join("\n");
}
