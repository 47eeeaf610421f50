// The `dstack-shim` command line: help, version, the systemd unit, and clear errors.
import { execFile } from "node:child_process";
import net from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { main, type MainIo } from "../../agent-shim/src/main.js";
import { tempHome } from "./helpers.js";

const BIN = fileURLToPath(new URL("../../agent-shim/bin/dstack-shim.js", import.meta.url));
const run = promisify(execFile);

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const io: MainIo = { stdout: (s) => void (out += s), stderr: (s) => void (err += s), env, signal: new AbortController().signal };
  const code = await main(argv, io);
  return { code, out, err };
}

describe("shim: dstack-shim command line", () => {
  it("--help from the real binary lists the commands and exits 0", async () => {
    const { stdout } = await run(process.execPath, [BIN, "--help"]);
    expect(stdout).toContain("dstack-shim join --server URL --token TOKEN --ca-sha256 FINGERPRINT");
    expect(stdout).toContain("dstack-shim run [--home DIR]");
    expect(stdout).toContain("dstack-shim systemd-unit");
    expect(stdout).toContain("--log-level");
    const v = await run(process.execPath, [BIN, "--version"]);
    expect(v.stdout.trim()).toBe("0.1.0");
  });

  it("systemd-unit prints a unit that runs `run --home DIR` with Restart=always", async () => {
    const { code, out } = await cli(["systemd-unit", "--home", "/var/lib/dstack-shim", "--log-level", "debug"]);
    expect(code).toBe(0);
    expect(out).toMatch(/^\[Unit\]/);
    expect(out).toContain(`ExecStart=${process.execPath} ${BIN} run --home /var/lib/dstack-shim --log-level debug`);
    expect(out).toContain("Restart=always");
    expect(out).toContain("KillMode=process"); // the containers are not the shim's processes
    expect(out).toContain("WantedBy=multi-user.target");
  });

  it("the home defaults to $DSTACK_SHIM_HOME, then ~/.dstack/shim", async () => {
    expect((await cli(["systemd-unit"], { DSTACK_SHIM_HOME: "/srv/shim" })).out).toContain("run --home /srv/shim");
    const { homedir } = await import("node:os");
    expect((await cli(["systemd-unit"], {})).out).toContain(`run --home ${join(homedir(), ".dstack", "shim")}`);
  });

  it("run without a stored identity fails with a message saying how to join", async () => {
    const home = join(tempHome(), "empty");
    const { code, err } = await cli(["run", "--home", home]);
    expect(code).toBe(1);
    const line = JSON.parse(err.trim().split("\n").pop()!) as { level: string; msg: string; error: string; time: string };
    expect(line.level).toBe("error");
    expect(line.error).toContain(`no shim identity in ${home}`);
    expect(line.error).toContain("dstack-shim join --server URL --token TOKEN --ca-sha256 FINGERPRINT");
    expect(new Date(line.time).getTime()).not.toBeNaN();
  });

  it("join to a server that is not there fails with the address in the message", async () => {
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
    const port = (srv.address() as net.AddressInfo).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const { code, err } = await cli(["join", "--server", `https://127.0.0.1:${port}`, "--token", "t", "--ca-sha256", "ab".repeat(32), "--home", tempHome()]);
    expect(code).toBe(1);
    expect(err).toContain(`cannot reach 127.0.0.1:${port}`);
  });

  it("usage errors exit 2 and point at --help", async () => {
    for (const argv of [[], ["bogus"], ["join", "--server", "https://x:1"], ["run", "--log-level", "loud"], ["run", "--no-such-flag"], ["run", "extra"]]) {
      const { code, err } = await cli(argv);
      expect(code, argv.join(" ")).toBe(2);
      expect(err).toContain("Run `dstack-shim --help` for usage.");
    }
    expect((await cli(["join", "--server", "https://x:1"])).err).toContain("join needs --token, --ca-sha256");
    expect((await cli(["run", "--log-level", "loud"])).err).toContain("--log-level must be one of debug, info, warn, error");
  });
});
