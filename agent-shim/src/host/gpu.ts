// Which accelerator vendor a host has, and its GPUs.
import { GpuVendor } from "@dstack/proto/agent";
import { discoverAmd } from "./amd.js";
import type { HostDeps } from "./deps.js";
import type { DiscoveredGpu } from "./discovered.js";
import { discoverNvidia } from "./nvidia.js";

const WSL_NVIDIA_SMI = "/usr/lib/wsl/lib/nvidia-smi";

/**
 * Vendor by device nodes, in the order dstack's shim checks them; the drivers create
 * these nodes, so this works before any vendor tool is consulted.
 */
export async function detectGpuVendor(deps: HostDeps): Promise<GpuVendor> {
  if (await deps.exists("/dev/nvidiactl")) return GpuVendor.NVIDIA;
  // WSL2 exposes GPUs through /dev/dxg; only NVIDIA ships a WSL nvidia-smi.
  if ((await deps.exists("/dev/dxg")) && (await deps.exists(WSL_NVIDIA_SMI))) return GpuVendor.NVIDIA;
  if (await deps.exists("/dev/tenstorrent")) return GpuVendor.TENSTORRENT;
  if (await deps.exists("/dev/kfd")) return GpuVendor.AMD;
  if (await deps.exists("/dev/accel")) return GpuVendor.INTEL;
  return GpuVendor.UNSPECIFIED;
}

export interface GpuDiscovery {
  vendor: GpuVendor;
  gpus: DiscoveredGpu[];
}

/**
 * Detects the vendor and lists its GPUs. Throws the typed errors of errors.ts when the
 * vendor's tool is missing, fails or prints something unreadable.
 */
export async function discoverGpus(deps: HostDeps): Promise<GpuDiscovery> {
  const vendor = await detectGpuVendor(deps);
  return { vendor, gpus: await listGpus(deps, vendor) };
}

/** Lists the GPUs of a known vendor with its tool; same errors as discoverGpus. */
export async function listGpus(deps: HostDeps, vendor: GpuVendor): Promise<DiscoveredGpu[]> {
  switch (vendor) {
    case GpuVendor.NVIDIA: {
      const wsl = !(await deps.exists("/dev/nvidiactl"));
      return discoverNvidia(deps, wsl ? WSL_NVIDIA_SMI : "nvidia-smi");
    }
    case GpuVendor.AMD:
      return discoverAmd(deps);
    case GpuVendor.INTEL:
    case GpuVendor.TENSTORRENT:
      // hl-smi and tt-smi parsing is not built yet; the device is reported without GPUs.
      deps.warn(`${GpuVendor[vendor]} accelerator present but its discovery is not implemented; reporting no GPUs`);
      return [];
    default:
      return [];
  }
}

/**
 * Whether containers can get the vendor's devices: NVIDIA needs the container toolkit
 * (a Docker runtime or a CDI spec), Intel Gaudi the habana runtime; AMD and Tenstorrent
 * devices are plain device nodes.
 */
export async function gpuRuntimeAvailable(
  deps: HostDeps,
  vendor: GpuVendor,
  runtimes: Record<string, unknown> | undefined,
): Promise<boolean> {
  switch (vendor) {
    case GpuVendor.NVIDIA:
      if (runtimes && "nvidia" in runtimes) return true;
      for (const spec of ["/etc/cdi/nvidia.yaml", "/etc/cdi/nvidia.json", "/var/run/cdi/nvidia.yaml", "/var/run/cdi/nvidia.json"]) {
        if (await deps.exists(spec)) return true;
      }
      return false;
    case GpuVendor.INTEL:
      return !!runtimes && "habana" in runtimes;
    case GpuVendor.AMD:
      return deps.exists("/dev/kfd");
    case GpuVendor.TENSTORRENT:
      return deps.exists("/dev/tenstorrent");
    default:
      return false;
  }
}
