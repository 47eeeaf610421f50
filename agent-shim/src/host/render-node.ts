// Maps an AMD GPU to its DRM render node (/dev/dri/renderD<N>), the device a
// container needs besides /dev/kfd. sysfs links every DRM node to its PCI device.
import type { HostDeps } from "./deps.js";

const DRM = "/sys/class/drm";

async function pciOf(deps: HostDeps, node: string): Promise<string> {
  try {
    const dev = await deps.realpath(`${DRM}/${node}/device`);
    return (dev.split("/").pop() ?? "").toLowerCase();
  } catch {
    return "";
  }
}

async function renderNodes(deps: HostDeps): Promise<string[]> {
  try {
    return (await deps.readdir(DRM)).filter((n) => /^renderD\d+$/.test(n));
  } catch {
    return [];
  }
}

/** Render node of the GPU at a PCI address in sysfs form ("0000:0c:00.0"); "" if none. */
export async function renderNodeForPci(deps: HostDeps, pciBusId: string): Promise<string> {
  if (pciBusId === "") return "";
  for (const node of await renderNodes(deps)) {
    if ((await pciOf(deps, node)) === pciBusId) return `/dev/dri/${node}`;
  }
  // udev's by-path links, for hosts whose sysfs is not the usual layout.
  try {
    const target = await deps.realpath(`/dev/dri/by-path/pci-${pciBusId}-render`);
    if (/^\/dev\/dri\/renderD\d+$/.test(target)) return target;
  } catch {
    // not there either
  }
  return "";
}
