// GPU tooling check for SSH fleet hosts. A host with NVIDIA or AMD GPUs is only useful when the
// shim can list them and Docker can hand them to containers, so the provisioner refuses such a
// host up front with what is missing instead of letting it join without its GPUs. A host without
// GPUs needs nothing. Detection uses what a plain host has: the drivers' device nodes and /proc
// files, and `lspci -n` when installed (it sees cards whose driver is not loaded).

/** One shell command; prints `key=value` lines that parseGpuProbe reads. */
export const GPU_PROBE = [
  "nv=; amd=",
  "for f in /dev/nvidiactl /dev/nvidia0 /proc/driver/nvidia/version; do [ -e \"$f\" ] && nv=1; done",
  '[ -e /dev/kfd ] && amd=1 && echo kfd=1',
  // PCI class 03xx (display) / 1200 (processing accelerator) by vendor 10de (NVIDIA) or 1002 (AMD);
  // AMD 0300 (VGA) is left out: integrated Radeon graphics are not compute GPUs.
  "if command -v lspci >/dev/null 2>&1; then",
  "  pci=$(lspci -n 2>/dev/null)",
  "  printf '%s\\n' \"$pci\" | grep -Eq ' (030[0-2]|0380|1200): 10de:' && nv=1",
  "  printf '%s\\n' \"$pci\" | grep -Eq ' (0380|1200): 1002:' && amd=1",
  "fi",
  'if [ -n "$nv" ]; then',
  "  echo nvidia=1",
  "  if command -v nvidia-smi >/dev/null 2>&1; then",
  "    out=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>&1); echo nvidia_smi_rc=$?",
  "    printf '%s\\n' \"$out\" | head -n 1 | sed 's/^/nvidia_smi_out=/'",
  "  fi",
  "  echo docker_runtimes=$(docker info --format '{{json .Runtimes}}' 2>/dev/null | tr -d '\\n')",
  "  for f in /etc/cdi/nvidia.yaml /etc/cdi/nvidia.json /var/run/cdi/nvidia.yaml /var/run/cdi/nvidia.json; do [ -e \"$f\" ] && echo cdi=1; done",
  "fi",
  'if [ -n "$amd" ]; then',
  "  echo amd=1",
  "  for t in amd-smi rocm-smi; do command -v $t >/dev/null 2>&1 && echo amd_tool=$t; done",
  "fi",
  "true",
].join("\n");

export interface GpuProbe {
  nvidia: boolean;
  /** Exit status of `nvidia-smi --query-gpu=name`; undefined when nvidia-smi is not installed. */
  nvidiaSmiRc?: number;
  nvidiaSmiOut: string;
  /** Docker runtime names (`docker info`), e.g. runc, nvidia. */
  dockerRuntimes: string[];
  cdi: boolean;
  amd: boolean;
  kfd: boolean;
  amdTools: string[];
}

export function parseGpuProbe(stdout: string): GpuProbe {
  const p: GpuProbe = { nvidia: false, nvidiaSmiOut: "", dockerRuntimes: [], cdi: false, amd: false, kfd: false, amdTools: [] };
  for (const line of stdout.split("\n")) {
    const eq = line.indexOf("=");
    if (eq < 0) continue;
    const [k, v] = [line.slice(0, eq), line.slice(eq + 1).trim()];
    if (k === "nvidia") p.nvidia = true;
    else if (k === "nvidia_smi_rc") p.nvidiaSmiRc = Number(v);
    else if (k === "nvidia_smi_out") p.nvidiaSmiOut = v;
    else if (k === "docker_runtimes" && v) {
      try {
        const r = JSON.parse(v) as unknown;
        if (r && typeof r === "object") p.dockerRuntimes = Object.keys(r);
      } catch {
        // not JSON (an old or odd docker): no runtimes known
      }
    } else if (k === "cdi") p.cdi = true;
    else if (k === "amd") p.amd = true;
    else if (k === "kfd") p.kfd = true;
    else if (k === "amd_tool" && v) p.amdTools.push(v);
  }
  return p;
}

/** What keeps a host's GPUs from being used, or null when it has none or all it needs. */
export function gpuToolingProblem(p: GpuProbe, host: string): string | null {
  if (p.nvidia) {
    if (p.nvidiaSmiRc === undefined) return `NVIDIA GPU found on ${host} but nvidia-smi is missing; install the NVIDIA driver`;
    if (p.nvidiaSmiRc !== 0 || p.nvidiaSmiOut === "") {
      return `NVIDIA GPU found on ${host} but nvidia-smi fails${p.nvidiaSmiOut ? `: ${p.nvidiaSmiOut}` : ` (exit status ${p.nvidiaSmiRc})`}`;
    }
    if (!p.dockerRuntimes.includes("nvidia") && !p.cdi) {
      return `NVIDIA GPU found on ${host} but the NVIDIA Container Toolkit is not configured for Docker (no nvidia runtime); install nvidia-container-toolkit and run \`nvidia-ctk runtime configure --runtime=docker\`, then restart Docker`;
    }
  }
  if (p.amd) {
    if (!p.kfd) return `AMD GPU found on ${host} but /dev/kfd is missing; load the amdgpu driver (ROCm)`;
    if (p.amdTools.length === 0) return `AMD GPU found on ${host} but neither amd-smi nor rocm-smi is installed; install ROCm`;
  }
  return null;
}
