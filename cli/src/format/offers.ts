// The offers table `dstack apply` and `dstack offer` print: #, BACKEND, RESOURCES, INSTANCE
// TYPE, PRICE and an availability note ("idle", "busy", "no quota"…; nothing when available).
import { Availability, type Offer } from "@dstack/proto/api";
import { formatBackend, formatInstanceResources, formatPrice } from "./resources.js";
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
