// `dstack fleet`: one row per fleet (what was asked for), one indented row per instance (what exists).
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { fromProtoConfiguration, type FleetConfig } from "@dstack/proto";
import { ConfigurationSchema, FleetStatus, InstanceStatus, type Fleet } from "@dstack/proto/api";
import { formatResources } from "./configuration.js";
import { formatBackend, formatInstanceResources, formatPrice, prettyDate } from "./resources.js";
import { noColor, type Palette } from "./style.js";
import { renderTable, type Cell, type Column, type Row } from "./table.js";

export function fleetConfigOf(f: Fleet): FleetConfig | undefined {
  const value = f.spec?.configuration;
  if (!value) return undefined;
  try {
    return fromProtoConfiguration(create(ConfigurationSchema, { kind: { case: "fleet", value } })) as FleetConfig;
  } catch {
    return undefined;
  }
}

function nodes(c: FleetConfig | undefined): string {
  if (!c) return "-";
  if (c.sshConfig) return String(c.sshConfig.hosts.length);
  const n = c.nodes;
  if (!n) return "-";
  if (n.max === n.min) return String(n.min);
  return n.max === undefined ? `${n.min}..` : `${n.min}..${n.max}`;
}

function gpuOf(c: FleetConfig | undefined): string {
  const g = c?.resources?.gpu;
  if (!g || (g.count.min === 0 && !g.count.max)) return "";
  const count = g.count.min === g.count.max ? String(g.count.min) : `${g.count.min ?? ""}..${g.count.max ?? ""}`;
  return [g.names?.join(",") ?? "gpu", count].join(":");
}

const lower = (e: Record<number, string>, v: number) => (e[v] ?? "unknown").toLowerCase();

export function formatFleetsTable(fleets: Fleet[], opts: { verbose?: boolean; palette?: Palette; now?: Date } = {}): string {
  const p = opts.palette ?? noColor;
  const verbose = opts.verbose ?? false;
  const columns: Column[] = [
    { header: "NAME" },
    { header: "NODES" },
    { header: verbose ? "RESOURCES" : "GPU" },
    { header: "SPOT" },
    { header: "BACKEND" },
    { header: "PRICE" },
    { header: "STATUS" },
    { header: "CREATED" },
    ...(verbose ? [{ header: "MESSAGE" }] : []),
  ];
  const rows: Row[] = [];
  const sorted = [...fleets].sort((a, b) => Number((b.createdAt?.seconds ?? 0n) - (a.createdAt?.seconds ?? 0n)));
  for (const f of sorted) {
    const c = fleetConfigOf(f);
    const ssh = Boolean(c?.sshConfig);
    const status = lower(FleetStatus, f.status);
    const cells: Cell[] = [
      { text: f.name, style: p.bold },
      { text: nodes(c), style: p.dim },
      { text: verbose ? (c?.resources ? formatResources(c.resources) : "") : gpuOf(c), style: p.dim },
      { text: ssh || !c ? "" : c.spotPolicy, style: p.dim },
      { text: ssh ? "ssh" : c?.backends?.length ? c.backends.join(", ") : "*", style: p.dim },
      { text: !ssh && c?.maxPrice !== undefined ? `$0..${c.maxPrice}` : "", style: p.dim },
      { text: status, style: f.status === FleetStatus.FAILED ? p.red : p.dim },
      { text: prettyDate(f.createdAt ? timestampDate(f.createdAt) : undefined, opts.now), style: p.dim },
      ...(verbose ? [{ text: f.statusMessage }] : []),
    ];
    rows.push(cells);
    for (const i of f.instances) {
      const r = i.instanceType?.resources;
      const istatus = i.unreachable ? `${lower(InstanceStatus, i.status)} (unreachable)` : lower(InstanceStatus, i.status);
      rows.push([
        { text: `   instance=${i.instanceNum}${i.sshHost ? ` ${i.sshHost}` : ""}` },
        "",
        verbose ? formatInstanceResources(r) : formatInstanceResources(r, { gpuOnly: true }),
        ssh ? "" : r ? (r.spot ? "spot" : "on-demand") : "",
        formatBackend(i.backend, i.region),
        ssh ? "" : formatPrice(i.price),
        { text: istatus, style: i.status === InstanceStatus.IDLE ? p.green : i.status === InstanceStatus.BUSY ? p.blue : undefined },
        { text: prettyDate(i.createdAt ? timestampDate(i.createdAt) : undefined, opts.now), style: p.dim },
        ...(verbose ? [i.statusMessage || i.terminationReasonMessage] : []),
      ] as Row);
    }
  }
  return renderTable(columns, rows, { headerStyle: p.bold });
}
