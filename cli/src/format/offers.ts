// The offers table `dstack apply` and `dstack offer` print: #, BACKEND, RESOURCES, INSTANCE
// TYPE, PRICE and an availability note ("idle", "busy", "no quota"…; nothing when available);
// and `dstack offer --group-by`'s filter header and GPU table (#, GPU, SPOT, $/GPU, BACKEND(S),
// REGION(S) as the grouping asks, and a note only when nothing in the group is usable).
import { Availability, type GpuOfferGroup, type Offer } from "@dstack/proto/api";
import { formatBackend, formatInstanceResources, formatPrice, mibAsGb } from "./resources.js";
import { noColor, type Palette } from "./style.js";
import { renderTable, type Row } from "./table.js";

export function availabilityText(a: Availability): string {
  if (a === Availability.UNSPECIFIED || a === Availability.UNKNOWN || a === Availability.AVAILABLE) return "";
  return (Availability[a] ?? "").replace(/_/g, " ").toLowerCase();
}

export function formatOffersTable(offers: Offer[], opts: { total?: number; palette?: Palette } = {}): string {
  const p = opts.palette ?? noColor;
  const total = opts.total ?? offers.length;
  const rows: Row[] = offers.map((o, i) => {
    const style = i === 0 ? undefined : p.dim;
    const instance = `${o.instance?.name || o.instanceName || "-"}${o.totalBlocks > 1 ? ` (${o.blocks}/${o.totalBlocks})` : ""}`;
    const cells = [
      String(i + 1),
      formatBackend(o.backend, o.region),
      formatInstanceResources(o.instance?.resources, { spot: true }),
      instance,
      formatPrice(o.price),
      availabilityText(o.availability),
    ];
    return cells.map((text) => (style ? { text, style } : text));
  });
  if (total > offers.length) rows.push(["", { text: "...", style: p.dim }]);
  let out = renderTable([{ header: "#" }, { header: "BACKEND" }, { header: "RESOURCES" }, { header: "INSTANCE TYPE" }, { header: "PRICE" }, { header: "" }], rows, { headerStyle: p.bold });
  if (total > offers.length) {
    const max = Math.max(0, ...offers.map((o) => o.price));
    out += p.dim(` Shown ${offers.length} of ${total} offers, ${formatPrice(max)}max`) + "\n";
  }
  return out;
}

export const NO_OFFERS_WARNING = "No matching instance offers available. Possible reasons: https://dstack.ai/docs/guides/troubleshooting/#no-offers\n";
export const NO_FLEETS_WARNING = "The project has no fleets. Create one before submitting a run.\nSee https://dstack.ai/docs/guides/troubleshooting/#no-fleets\n";

export type GroupByField = "gpu" | "backend" | "region" | "count";

/** The key/value lines above the GPU table: what was asked for and how it is grouped. */
export function formatOfferFilter(o: { project: string; resources: string; maxPrice?: number | undefined; groupBy: readonly GroupByField[]; palette?: Palette }): string {
  const p = o.palette ?? noColor;
  const rows: [string, string][] = [
    ["Project", o.project],
    ["Resources", o.resources],
    ["Spot policy", "auto"],
    ["Max price", o.maxPrice !== undefined ? `$${o.maxPrice}` : "-"],
    ["Reservation", "-"],
    ["Group by", o.groupBy.join(", ")],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => ` ${p.bold(k.padEnd(width))}  ${v}\n`).join("") + "\n";
}

/** `1.5`, `0.25..2` (per-GPU price, up to four decimals, no currency sign as in dstack's $/GPU column). */
const perGpu = (n: number | undefined) => (n ?? 0).toFixed(4).replace(/\.?0+$/, "");
const regionsText = (regions: readonly string[]) => (regions.length > 3 ? `${regions.length} regions` : regions.join(", "));

export function formatGpuGroupsTable(groups: readonly GpuOfferGroup[], groupBy: readonly GroupByField[], opts: { palette?: Palette } = {}): string {
  const p = opts.palette ?? noColor;
  const byBackend = groupBy.includes("backend");
  const byRegion = groupBy.includes("region");
  const rows: Row[] = groups.map((g, i) => {
    const count = g.countMin === g.countMax ? String(g.countMin) : `${g.countMin}..${g.countMax}`;
    const price = g.price?.min === g.price?.max ? perGpu(g.price?.min) : `${perGpu(g.price?.min)}..${perGpu(g.price?.max)}`;
    const backends = g.backends.map((b) => formatBackend(b)).join(", ");
    const usable = g.availability === Availability.AVAILABLE || g.availability === Availability.IDLE;
    const cells: Row = [
      { text: String(i + 1), style: p.dim },
      `${g.name}:${mibAsGb(g.memoryMib)}:${count}`,
      { text: g.spot ? "spot" : "on-demand", style: p.dim },
      { text: price, style: p.dim },
      { text: backends, style: p.dim },
    ];
    if (byBackend) cells.push({ text: regionsText(g.regions), style: p.dim });
    cells.push({ text: usable ? "" : availabilityText(g.availability), style: p.dim });
    return cells;
  });
  const columns = [{ header: "#" }, { header: "GPU" }, { header: "SPOT" }, { header: "$/GPU" }, { header: byBackend ? "BACKEND" : "BACKENDS" }];
  if (byBackend) columns.push({ header: byRegion ? "REGION" : "REGIONS" });
  columns.push({ header: "" });
  return renderTable(columns, rows, { headerStyle: p.bold });
}
