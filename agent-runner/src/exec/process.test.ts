import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { CrlfToLf, JobProcess } from "./process.js";

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

  describe("under a pseudo-terminal", () => {
    const startTty = (script: string) => JobProcess.start({ argv: ["/bin/sh", "-c", script], cwd: "/tmp", env: { PATH: "/usr/bin:/bin" }, tty: { cols: 132, rows: 43 } });
    const collect = (p: JobProcess) => {
      const out: string[] = [];
      p.stdout.on("data", (d: Buffer) => out.push(d.toString()));
      p.stderr.on("data", (d: Buffer) => out.push(`[stderr]${d.toString()}`));
      return out;
    };

    it("gives the job a terminal of the asked size; stderr arrives on stdout with plain \\n line ends", async () => {
      const p = await startTty("tty; stty size; echo to-stderr >&2; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-terminals; exit 5");
      const out = collect(p);
      const exit = await p.done;
      expect(exit).toEqual({ code: 5, signal: null });
      expect(p.ttyName).toMatch(/^\/dev\/pts\/\d+$/);
      expect(out.join("")).toBe(`${p.ttyName}\n43 132\nto-stderr\nall-terminals\n`);
    });

    it("SIGTERM on stop reaches the process group, the job's trap runs", async () => {
      const p = await startTty("trap 'echo cleaning; exit 42' TERM; echo ready; while :; do sleep 0.05; done");
      const out = collect(p);
      await new Promise<void>((ok) => {
        const t = setInterval(() => out.join("").includes("ready") && (clearInterval(t), ok()), 10);
      });
      const exit = await p.stop(60_000);
      expect(exit.code).toBe(42);
      // The shell may also report its killed `sleep` ("Terminated"): stderr shares the terminal.
      expect(out.join("")).toMatch(/^ready\n(Terminated\n)?cleaning\n$/);
    });

    it("reports a signal death as 128 + signal", async () => {
      const p = await startTty("trap '' TERM; echo ready; while :; do sleep 0.05; done");
      const out = collect(p);
      await new Promise<void>((ok) => {
        const t = setInterval(() => out.join("").includes("ready") && (clearInterval(t), ok()), 10);
      });
      expect(await p.stop(100)).toEqual({ code: 137, signal: "SIGKILL" });
    });

    it("fails to start with ENOENT when the shell does not exist", async () => {
      await expect(JobProcess.start({ argv: ["/no/such/shell", "-c", "true"], cwd: "/tmp", env: {}, tty: { cols: 80, rows: 24 } })).rejects.toMatchObject({ code: "ENOENT" });
    });
  });

  it("CrlfToLf turns the terminal's \\r\\n into \\n across chunk edges and keeps a lone \\r", () => {
    const c = new CrlfToLf();
    const parts = ["a\r", "\nb\r\n", "50%\r100%\r", ""].map((s) => c.push(Buffer.from(s)).toString());
    expect(parts.join("") + c.end().toString()).toBe("a\nb\n50%\r100%\r");
  });
});
