import type { AnyConfig, OffableDuration, Range, ResourceRequirements } from "@dstack/proto";

/** Formats a range as dstack writes it: `2`, `2..`, `..8`, `2..8`. */
export function formatRange(range: Range | undefined, unit = ""): string {
  if (!range || (range.min === undefined && range.max === undefined)) return "-";
  const f = (n: number) => `${n}${unit}`;
  if (range.min !== undefined && range.min === range.max) return f(range.min);
  return `${range.min !== undefined ? f(range.min) : ""}..${range.max !== undefined ? f(range.max) : ""}`;
}

/** Formats a size in GB the way a person writes it: 0.25 → 256MB, 80 → 80GB, 2048 → 2TB. */
export function formatSize(gb: number): string {
  if (gb < 1) return `${Math.round(gb * 1024)}MB`;
  if (gb >= 1024 && gb % 1024 === 0) return `${gb / 1024}TB`;
  return `${gb}GB`;
}

function formatSizeRange(range: Range | undefined): string {
  if (!range) return "-";
  const min = range.min !== undefined ? formatSize(range.min) : "";
  const max = range.max !== undefined ? formatSize(range.max) : "";
  if (range.min !== undefined && range.min === range.max) return min;
  return `${min}..${max}`;
}

/** Seconds → the largest exact unit (`300` → `5m`); "off" stays "off". */
export function formatDuration(d: OffableDuration | undefined): string {
  if (d === undefined) return "-";
  if (d === "off") return "off";
  for (const [unit, s] of [["w", 604800], ["d", 86400], ["h", 3600], ["m", 60]] as const) {
    if (d >= s && d % s === 0) return `${d / s}${unit}`;
  }
  return `${d}s`;
}

export function formatResources(r: ResourceRequirements): string {
  const parts = [
    `cpu=${r.cpu.arch ? `${r.cpu.arch}:` : ""}${formatRange(r.cpu.count)}`,
    `mem=${formatSizeRange(r.memory)}`,
    `disk=${formatSizeRange(r.disk.size)}`,
  ];
  const gpu = r.gpu;
  const gpuWanted = gpu.vendor || gpu.names?.length || gpu.memory || gpu.count.min !== 0 || gpu.count.max !== undefined;
  if (gpuWanted) {
    const tokens = [
      gpu.vendor,
      gpu.names?.join(","),
      gpu.memory ? formatSizeRange(gpu.memory) : undefined,
      formatRange(gpu.count),
    ].filter((t): t is string => Boolean(t));
    parts.push(`gpu=${tokens.join(":")}`);
  }
  if (r.shmSize !== undefined) parts.push(`shm=${formatSize(r.shmSize)}`);
  return parts.join(" ");
}

/** The key/value header `dstack apply` prints before the offers. */
export function formatConfigurationSummary(config: AnyConfig, fileName: string): string {
  const rows: [string, string][] = [
    ["Configuration", fileName],
    ["Type", config.type],
    ["Name", config.name ?? "(generated on submit)"],
  ];
  switch (config.type) {
    case "task":
    case "service":
    case "dev-environment":
      rows.push(
        ["Image", config.image ?? (config.python ? `python ${config.python} (default image)` : "default image")],
        ["Resources", formatResources(config.resources)],
        ["Spot policy", config.spotPolicy],
        ["Max price", config.maxPrice !== undefined ? `$${config.maxPrice}` : "-"],
        ["Retry policy", config.retry ? `${config.retry.onEvents.join(",")} for ${formatDuration(config.retry.duration)}` : "no"],
        ["Creation policy", config.creationPolicy],
        ["Idle duration", formatDuration(config.idleDuration)],
        ["Max duration", formatDuration(config.maxDuration)],
      );
      if (config.type === "service") rows.push(["Port", String(config.port.containerPort)]);
      if (config.type === "service" && config.replicas) rows.push(["Replicas", formatRange(config.replicas)]);
      break;
    case "fleet":
      rows.push(["Placement", config.placement], ["Blocks", String(config.blocks)]);
      if (config.sshConfig) rows.push(["Hosts", config.sshConfig.hosts.map((h) => h.hostname).join(", ")]);
      if (config.resources) rows.push(["Resources", formatResources(config.resources)]);
      break;
    case "volume":
      rows.push(["Backend", config.backend], ["Region", config.region || "-"], ["Size", config.size !== undefined ? formatSize(config.size) : "-"]);
      break;
    case "gateway":
      rows.push(["Backend", config.backend], ["Region", config.region], ["Domain", config.domain ?? "-"]);
      break;
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  return rows.map(([k, v]) => ` ${k.padEnd(width)}  ${v}\n`).join("") + "\n";
}
