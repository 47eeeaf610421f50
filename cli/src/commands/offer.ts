// `dstack offer`: what the project's fleets (and backends) can offer for a requirement; with
// `--group-by gpu[,backend][,region][,count]`, GPU offers aggregated as dstack shows them.
import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { GpuOfferGroupSchema, OfferGroupBy, OfferSchema } from "@dstack/proto/api";
import { formatResources } from "../format/configuration.js";
import { formatGpuGroupsTable, formatOfferFilter, formatOffersTable, NO_OFFERS_WARNING, type GroupByField } from "../format/offers.js";
import { CliError, type CliIO } from "../io.js";
import { addResourceFlags, applyResourceFlags, clientFor, collect, parseCount, printJson, stdoutPalette, withProject, type ProjectOptions, type ResourceFlags } from "./common.js";

interface OfferOptions extends ProjectOptions, ResourceFlags {
  json?: boolean;
  format?: string;
  maxOffers?: string;
  maxPrice?: string;
  fleet: string[];
  groupBy: string[];
}

const GROUP_BY: Record<GroupByField, OfferGroupBy> = { gpu: OfferGroupBy.GPU, backend: OfferGroupBy.BACKEND, region: OfferGroupBy.REGION, count: OfferGroupBy.COUNT };

/** `--group-by` values (repeated and/or comma-separated), checked as dstack checks them. */
export function parseGroupBy(values: readonly string[]): GroupByField[] {
  const out: GroupByField[] = [];
  for (const v of values.flatMap((x) => x.split(",")).map((x) => x.trim()).filter(Boolean)) {
    if (!(v in GROUP_BY)) throw new CliError(`Invalid group-by value: '${v}'. Valid choices are: ${Object.keys(GROUP_BY).sort().join(", ")}`, 2);
    if (!out.includes(v as GroupByField)) out.push(v as GroupByField);
  }
  if (out.length && !out.includes("gpu")) throw new CliError(`Cannot group by '${out.join(", ")}' without also grouping by 'gpu'`, 2);
  if (out.includes("region") && !out.includes("backend")) throw new CliError("Cannot group by 'region' without also grouping by 'backend'", 2);
  return out;
}

export function registerOffer(program: Command, io: CliIO): void {
  const cmd = program
    .command("offer")
    .description("list offers that match a requirement")
    .option("--max-offers <n>", "how many offers to show (default 50)")
    .option("--max-price <usd>", "maximum price per hour")
    .option("--fleet <name>", "only offers of this fleet (repeatable)", collect, [])
    .option("--group-by <fields>", "group GPU offers by gpu, backend, region, count (must include gpu; region needs backend; repeatable or comma-separated)", collect, [])
    .option("--format <format>", "output format: plain or json", "plain")
    .option("--json", "output JSON (same as --format json)");
  addResourceFlags(cmd);
  withProject(cmd).action(async (options: OfferOptions) => {
    if (options.format !== "plain" && options.format !== "json") throw new CliError(`Invalid --format '${options.format}': expected plain or json`, 2);
    const maxPrice = options.maxPrice !== undefined ? Number(options.maxPrice) : undefined;
    if (maxPrice !== undefined && !(maxPrice > 0)) throw new CliError(`Invalid --max-price '${options.maxPrice}': expected a positive number`, 2);
    const groupBy = parseGroupBy(options.groupBy);
    const json = options.json || options.format === "json";
    const resources = applyResourceFlags(undefined, options);
    const client = clientFor(io, options);
    const res = await client.offers.list({
      resources,
      fleets: options.fleet,
      maxOffers: options.maxOffers ? parseCount("--max-offers", options.maxOffers) : 50,
      ...(maxPrice !== undefined ? { maxPrice } : {}),
      groupBy: groupBy.map((g) => GROUP_BY[g]),
    });
    if (groupBy.length) {
      if (json) return printJson(io, { project: client.project, groupBy, gpus: res.groups.map((g) => toJson(GpuOfferGroupSchema, g)) });
      const p = stdoutPalette(io);
      io.stdout.write(formatOfferFilter({ project: client.project, resources: formatResources(resources), maxPrice, groupBy, palette: p }));
      if (res.groups.length === 0) return void io.stdout.write(NO_OFFERS_WARNING);
      return void io.stdout.write(formatGpuGroupsTable(res.groups, groupBy, { palette: p }));
    }
    if (json) {
      return printJson(io, { project: client.project, totalOffers: res.totalOffers, offers: res.offers.map((o) => toJson(OfferSchema, o)) });
    }
    if (res.offers.length === 0) return void io.stdout.write(NO_OFFERS_WARNING);
    io.stdout.write(formatOffersTable(res.offers, { total: Math.max(res.totalOffers, res.offers.length), palette: stdoutPalette(io) }));
  });
}
