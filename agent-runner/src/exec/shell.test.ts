import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { joinCommands, jobArgv, selectShell } from "./shell.js";

const has = (...paths: string[]) => (p: string) => paths.includes(p);

describe("shell selection", () => {
  it("prefers bash when the image has it, in /bin or /usr/bin", () => {
    expect(selectShell(undefined, has("/bin/bash", "/bin/sh"))).toBe("/bin/bash");
    expect(selectShell(undefined, has("/usr/bin/bash", "/bin/sh"))).toBe("/usr/bin/bash");
  });

  it("falls back to /bin/sh when there is no bash (busybox, alpine)", () => {
    expect(selectShell(undefined, has("/bin/sh"))).toBe("/bin/sh");
    expect(selectShell("", has())).toBe("/bin/sh");
  });

  it("uses the configured shell, a bare name meaning /bin/<name> as in dstack", () => {
    expect(selectShell("sh", has("/bin/bash"))).toBe("/bin/sh");
    expect(selectShell("/usr/local/bin/zsh", has("/bin/bash"))).toBe("/usr/local/bin/zsh");
  });
});

describe("script", () => {
  it("joins commands with && and wraps a backgrounded command so it backgrounds only itself", () => {
    expect(joinCommands(["  echo a ", "", "python serve.py &", "echo b && echo c"])).toBe("echo a && { python serve.py & } && echo b && echo c");
  });

  it("runs commands as [shell, -c, script], or the entrypoint with the commands as its arguments", () => {
    expect(jobArgv({ commands: ["echo hi", "true"], entrypoint: [] }, has("/bin/sh"))).toEqual(["/bin/sh", "-c", "echo hi && true"]);
    expect(jobArgv({ commands: ["--port", "80"], entrypoint: ["/app/serve"] }, has("/bin/bash"))).toEqual(["/app/serve", "--port", "80"]);
    expect(() => jobArgv({ commands: [" "], entrypoint: [] })).toThrow(/neither commands nor an entrypoint/);
  });

  it("stops at the first failing command and exits with its status, in sh and in bash", () => {
    for (const shell of ["/bin/sh", "/bin/bash"]) {
      const [file, ...args] = jobArgv({ commands: ["echo one", "sh -c 'exit 3'", "echo never"], entrypoint: [], shell });
      const r = spawnSync(file!, args, { encoding: "utf8" });
      expect(r.status).toBe(3);
      expect(r.stdout).toBe("one\n");
    }
  });

  it("keeps || and if inside a command working (no set -e around the user's lines)", () => {
    const [file, ...args] = jobArgv({ commands: ["false || echo recovered", "if false; then echo no; fi", "echo end"], entrypoint: [] });
    const r = spawnSync(file!, args, { encoding: "utf8" });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe("recovered\nend\n");
  });
});
