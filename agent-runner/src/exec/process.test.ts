import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { JobProcess } from "./process.js";

/** Running or sleeping; a killed orphan may linger as a zombie until its new parent reaps it. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/^\d+ \(.*\) [ZX]/.test(stat);
  } catch {
    return false;
  }
}

const start = (script: string) => JobProcess.start({ argv: ["/bin/sh", "-c", script], cwd: "/tmp", env: { PATH: "/usr/bin:/bin" } });

/** Resolves once the process printed `text`. */
function printed(p: JobProcess, text: string): Promise<void> {
  return new Promise((ok) => {
    let all = "";
    p.stdout.on("data", (d: Buffer) => {
      all += d.toString();
      if (all.includes(text)) ok();
    });
  });
}

describe("job process", () => {
  it("reports the exit status", async () => {
    expect((await (await start("exit 3")).done).code).toBe(3);
    expect((await (await start("true")).done).code).toBe(0);
  });

  it("lets the job clean up within the grace period on stop (SIGTERM to the group)", async () => {
    const p = await start("trap 'echo cleaning; exit 42' TERM; echo ready; while :; do sleep 0.05; done");
    await printed(p, "ready");
    const out: string[] = [];
    p.stdout.on("data", (d: Buffer) => out.push(d.toString()));
    const exit = await p.stop(60_000);
    expect(exit.code).toBe(42);
    expect(exit.signal).toBeNull();
    expect(out.join("")).toContain("cleaning");
  });

  it("kills the group with SIGKILL when the job ignores SIGTERM past the grace period", async () => {
    const p = await start("trap '' TERM; echo ready; while :; do sleep 0.05; done");
    await printed(p, "ready");
    const exit = await p.stop(100);
    expect(exit.signal).toBe("SIGKILL");
    expect(exit.code).toBe(137);
  });

  it("ends background children with the shell, so their pipes close and the job ends", async () => {
    const p = await start("sleep 1000 & echo $! ; echo started");
    let pid = 0;
    p.stdout.on("data", (d: Buffer) => (pid ||= Number(d.toString().split("\n")[0])));
    const exit = await p.done;
    expect(exit.code).toBe(0);
    expect(pid).toBeGreaterThan(0);
    expect(alive(pid)).toBe(false);
  });

  it("fails to start with the errno when the shell does not exist", async () => {
    await expect(JobProcess.start({ argv: ["/no/such/shell", "-c", "true"], cwd: "/tmp", env: {} })).rejects.toMatchObject({ code: "ENOENT" });
  });
});
