// `dstack offer`: what the project's fleets (and backends) can offer for a requirement.
import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { OfferSchema } from "@dstack/proto/api";
import { formatOffersTable, NO_OFFERS_WARNING } from "../format/offers.js";
import { CliError, type CliIO } from "../io.js";
import { addResourceFlags, applyResourceFlags, clientFor, collect, parseCount, printJson, stdoutPalette, withProject, type ProjectOptions, type ResourceFlags } from "./common.js";

interface OfferOptions extends ProjectOptions, ResourceFlags {
  json?: boolean;
  format?: string;
  maxOffers?: string;
  maxPrice?: string;
  fleet: string[];
}

export function registerOffer(program: Command, io: CliIO): void {
  const cmd = program
    .command("offer")
    .description("list offers that match a requirement")
    .option("--max-offers <n>", "how many offers to show (default 50)")
    .option("--max-price <usd>", "maximum price per hour")
    .option("--fleet <name>", "only offers of this fleet (repeatable)", collect, [])
    .option("--format <format>", "output format: plain or json", "plain")
    .option("--json", "output JSON (same as --format json)");
  addResourceFlags(cmd);
  withProject(cmd).action(async (options: OfferOptions) => {
    if (options.format !== "plain" && options.format !== "json") throw new CliError(`Invalid --format '${options.format}': expected plain or json`, 2);
    const maxPrice = options.maxPrice !== undefined ? Number(options.maxPrice) : undefined;
    if (maxPrice !== undefined && !(maxPrice > 0)) throw new CliError(`Invalid --max-price '${options.maxPrice}': expected a positive number`, 2);
    const resources = applyResourceFlags(undefined, options);
    const client = clientFor(io, options);
    const res = await client.offers.list({
      resources,
      fleets: options.fleet,
      maxOffers: options.maxOffers ? parseCount("--max-offers", options.maxOffers) : 50,
      ...(maxPrice !== undefined ? { maxPrice } : {}),
    });
    if (options.json || options.format === "json") {
      return printJson(io, { project: client.project, totalOffers: res.totalOffers, offers: res.offers.map((o) => toJson(OfferSchema, o)) });
    }
    if (res.offers.length === 0) return void io.stdout.write(NO_OFFERS_WARNING);
    io.stdout.write(formatOffersTable(res.offers, { total: Math.max(res.totalOffers, res.offers.length), palette: stdoutPalette(io) }));
  });
}
