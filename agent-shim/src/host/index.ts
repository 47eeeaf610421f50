// Host discovery: the facts the shim reports about its machine (see collect.ts).
export { collectHostInfo, collectHostReport, goArch, isPrivateAddress, networkAddresses, parseOsRelease } from "./collect.js";
export type { CollectOptions, HostReport } from "./collect.js";
export type { CommandResult, CpuInfo, DockerFacts, HostDeps, NetInterfaceAddress, StatFs } from "./deps.js";
export { cleanField, normalizePciBusId } from "./discovered.js";
export type { DiscoveredGpu } from "./discovered.js";
export { GpuToolFailedError, GpuToolMissingError, GpuToolOutputError } from "./errors.js";
export type { GpuToolError } from "./errors.js";
export { detectGpuVendor, discoverGpus, gpuRuntimeAvailable, listGpus } from "./gpu.js";
export type { GpuDiscovery } from "./gpu.js";
export { discoverNvidia, parseNvidiaSmiCsv, NVIDIA_FIELDS, NVIDIA_FIELDS_LEGACY } from "./nvidia.js";
export { discoverAmd, parseAmdSmiStatic, parseRocmSmi } from "./amd.js";
export type { AmdSmiEntry, RocmSmiEntry } from "./amd.js";
export { normalizeAmdName, normalizeGpuName, normalizeIntelName, normalizeNvidiaName } from "./names.js";
export { renderNodeForPci } from "./render-node.js";
export { dockerFacts, runCommand, systemDeps } from "./system.js";
