// Short model names as dstack's catalog (gpuhunt) spells them, so that offers and
// resource specs ("A100", "H100", "RTX4090", "MI300X") match what hosts report.
import { GpuVendor } from "@dstack/proto/agent";

/** "NVIDIA H100 80GB HBM3" → "H100", "NVIDIA GeForce RTX 4090" → "RTX4090". */
export function normalizeNvidiaName(raw: string): string {
  let name = raw.trim();
  for (const brand of ["NVIDIA ", "Tesla ", "Quadro ", "GeForce "]) name = name.split(brand).join("");
  if (name.includes("GH200")) return "GH200";
  // Ampere workstation cards ("RTX A6000") are catalogued by their A-number alone.
  if (name.includes("RTX A")) {
    name = name.replace("RTX A", "A");
    const a = /A\d+/.exec(name);
    return a ? a[0] : name.replace(/ /g, "");
  }
  // Glue variant suffixes to the model so they survive the model-number match below.
  name = name
    .replace(/ Ti/g, "Ti")
    .replace(/ ?super/gi, "SUPER")
    .replace(/ NVL/g, "NVL")
    .replace(/ Ada Generation/g, "Ada")
    .replace(/RTX /g, "RTX");
  // Data-centre parts: a series letter then digits ("A100-SXM4-80GB" → "A100", "L40S").
  const dc = /[AHLPTV]\d+\w*/.exec(name);
  return dc ? dc[0] : name.replace(/ /g, "");
}

/** "AMD Instinct MI300X" → "MI300X"; names outside the Instinct line pass through. */
export function normalizeAmdName(raw: string): string {
  let name = raw.trim();
  const m = /^(?:AMD )?(?:Instinct )?(MI\d{1,3}[A-Z]?(?:-\w+)?)(?:\s|$)/i.exec(name);
  if (m?.[1]) name = m[1];
  // amd-smi reports some MI300X boards with an "-O" (OAM) suffix.
  if (name === "MI300X-O") return "MI300X";
  return name;
}

// Gaudi model prefixes as hl-smi reports them.
const GAUDI_MODELS: ReadonlyArray<[string, string]> = [
  ["HL-205", "Gaudi"],
  ["HL-225", "Gaudi2"],
  ["HL-325", "Gaudi3"],
  ["HL-338", "Gaudi3"],
];

/** "HL-225" → "Gaudi2". */
export function normalizeIntelName(raw: string): string {
  const name = raw.trim();
  for (const [prefix, market] of GAUDI_MODELS) if (name.startsWith(prefix)) return market;
  return name;
}

/** The catalog name for a vendor tool's model name. */
export function normalizeGpuName(vendor: GpuVendor, raw: string): string {
  switch (vendor) {
    case GpuVendor.NVIDIA:
      return normalizeNvidiaName(raw);
    case GpuVendor.AMD:
      return normalizeAmdName(raw);
    case GpuVendor.INTEL:
      return normalizeIntelName(raw);
    default:
      return raw.trim();
  }
}
