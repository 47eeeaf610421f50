// The GPU probe runs in a real sh; the "host" is this machine with commands shadowed by
// wrappers in PATH (lspci, nvidia-smi, docker, amd-smi), as an SSH session would see them.
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { GPU_PROBE, gpuToolingProblem, parseGpuProbe } from "./gpu.js";

const STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const FIXTURES = join(import.meta.dirname, "../../../../agent-shim/src/host/fixtures");
const tmp = mkdtempSync(join(tmpdir(), "gpu-probe-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function probe(scripts: Record<string, string>): string {
  const dir = join(tmp, String(n++));
  execFileSync("mkdir", ["-p", dir]);
  for (const [cmd, body] of Object.entries(scripts)) {
    writeFileSync(join(dir, cmd), `#!/bin/sh\n${body}\n`);
    chmodSync(join(dir, cmd), 0o755);
  }
  // No real lspci/nvidia-smi/amd-smi leaks in from this machine's PATH beyond STD_PATH.
  return execFileSync("sh", ["-c", GPU_PROBE], { encoding: "utf8", env: { PATH: `${dir}:${STD_PATH}` } });
}

const H = "root@10.0.0.5:22";
const LSPCI_H100 = 'echo "00:02.0 0300: 1a03:2000 (rev 52)"; echo "18:00.0 0302: 10de:2330 (rev a1)"';
const SMI_OK = `cat ${join(FIXTURES, "nvidia-smi-h100x1.csv")}`;
const DOCKER_NVIDIA = `if [ "$1" = info ]; then echo '{"io.containerd.runc.v2":{"path":"runc"},"nvidia":{"path":"nvidia-container-runtime"},"runc":{"path":"runc"}}'; else exit 1; fi`;
const DOCKER_PLAIN = `if [ "$1" = info ]; then echo '{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}}'; else exit 1; fi`;

describe("GPU tooling probe", () => {
  it("a host without GPUs (a BMC's VGA and an integrated Radeon only) needs nothing", () => {
    const p = parseGpuProbe(probe({ lspci: 'echo "00:02.0 0300: 1a03:2000 (rev 52)"; echo "05:00.0 0300: 1002:164e (rev c1)"' }));
    expect(p.nvidia || p.amd).toBe(false);
    expect(gpuToolingProblem(p, H)).toBeNull();
  });

  it("an NVIDIA card without nvidia-smi is refused", () => {
    const p = parseGpuProbe(probe({ lspci: LSPCI_H100 }));
    expect(p.nvidia).toBe(true);
    expect(gpuToolingProblem(p, H)).toBe(`NVIDIA GPU found on ${H} but nvidia-smi is missing; install the NVIDIA driver`);
  });

  it("an nvidia-smi that cannot reach the driver is refused with its message", () => {
    const p = parseGpuProbe(probe({ lspci: LSPCI_H100, "nvidia-smi": `cat ${join(FIXTURES, "nvidia-smi-no-driver.txt")}; exit 9` }));
    expect(gpuToolingProblem(p, H)).toBe(
      `NVIDIA GPU found on ${H} but nvidia-smi fails: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.`,
    );
  });

  it("a Docker without the nvidia runtime is refused", () => {
    const p = parseGpuProbe(probe({ lspci: LSPCI_H100, "nvidia-smi": SMI_OK, docker: DOCKER_PLAIN }));
    expect(p.dockerRuntimes).toEqual(["io.containerd.runc.v2", "runc"]);
    expect(gpuToolingProblem(p, H)).toMatch(/^NVIDIA GPU found on root@10\.0\.0\.5:22 but the NVIDIA Container Toolkit is not configured for Docker \(no nvidia runtime\); /);
  });

  it("nvidia-smi and the nvidia runtime: the host passes", () => {
    const p = parseGpuProbe(probe({ lspci: LSPCI_H100, "nvidia-smi": SMI_OK, docker: DOCKER_NVIDIA }));
    expect(p).toMatchObject({ nvidia: true, nvidiaSmiRc: 0, amd: false });
    expect(p.nvidiaSmiOut).toContain("NVIDIA H100 80GB HBM3");
    expect(gpuToolingProblem(p, H)).toBeNull();
  });

  it("an AMD Instinct card needs /dev/kfd and amd-smi or rocm-smi", () => {
    const lspci = 'echo "c1:00.0 1200: 1002:74a1"';
    expect(gpuToolingProblem(parseGpuProbe(probe({ lspci })), H)).toBe(`AMD GPU found on ${H} but /dev/kfd is missing; load the amdgpu driver (ROCm)`);
    // /dev/kfd cannot be faked here; the rest of the rule is checked on the parsed probe.
    expect(gpuToolingProblem(parseGpuProbe("amd=1\nkfd=1\n"), H)).toBe(`AMD GPU found on ${H} but neither amd-smi nor rocm-smi is installed; install ROCm`);
    expect(gpuToolingProblem(parseGpuProbe("amd=1\nkfd=1\namd_tool=amd-smi\n"), H)).toBeNull();
  });

  it("a CDI spec stands in for the nvidia runtime", () => {
    expect(gpuToolingProblem(parseGpuProbe("nvidia=1\nnvidia_smi_rc=0\nnvidia_smi_out=NVIDIA H100\ndocker_runtimes={\"runc\":{}}\ncdi=1\n"), H)).toBeNull();
  });
});
