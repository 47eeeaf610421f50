import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { shimSystemdUnit, systemdWord } from "./systemd-unit.js";

describe("the dstack-shim systemd unit", () => {
  it("an SSH-fleet host's unit is byte for byte the one installed hosts have (their install marker hashes it)", () => {
    const dir = "/opt/dstack/shim-0b6f3a4e-1d2c-4e5f-9a8b-7c6d5e4f3a2b";
    expect(shimSystemdUnit({ description: "dstack-shim (dstack host agent of an SSH fleet)", command: ["/bin/sh", `${dir}/start.sh`], logFile: `${dir}/shim.log` })).toBe(
      [
        "[Unit]",
        "Description=dstack-shim (dstack host agent of an SSH fleet)",
        "After=network-online.target docker.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        `ExecStart=/bin/sh ${dir}/start.sh`,
        `StandardOutput=append:${dir}/shim.log`,
        `StandardError=append:${dir}/shim.log`,
        "Restart=always",
        "RestartSec=2",
        "KillMode=process",
        "TimeoutStopSec=30",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
      ].join("\n"),
    );
  });

  it("a hand-installed shim's unit requires Docker and logs to the journal", () => {
    const u = shimSystemdUnit({ description: "dstack-shim (dstack host agent)", command: ["/usr/bin/node", "/srv/shim.js", "run"], requireDocker: true });
    expect(u).toContain("Requires=docker.service\n");
    expect(u).toContain("ExecStart=/usr/bin/node /srv/shim.js run\n");
    expect(u).not.toContain("StandardOutput");
  });

  it("words systemd would expand or split are quoted", () => {
    expect(systemdWord("/var/lib/dstack-shim")).toBe("/var/lib/dstack-shim");
    expect(systemdWord("/srv/my shim")).toBe('"/srv/my shim"');
    expect(systemdWord("/srv/$HOME/100%")).toBe('"/srv/$$HOME/100%%"');
    expect(systemdWord('a"b\\c')).toBe('"a\\"b\\\\c"');
    expect(() => shimSystemdUnit({ description: "x", command: [] })).toThrow(/command is empty/);
  });

  it("systemd parses the unit without complaint (systemd-analyze verify)", () => {
    const dir = mkdtempSync(join(tmpdir(), "unit-"));
    try {
      const words = ["/bin/echo", "/srv/my shim", "$HOME", "100%", 'a"b\\c'];
      const unit = join(dir, "dstack-shim-test.service");
      writeFileSync(unit, shimSystemdUnit({ description: "test", command: words, logFile: join(dir, "100% log") }));
      // `verify` parses the unit as systemd would: bad quoting or an unknown specifier is reported on stderr.
      const r = spawnSync("systemd-analyze", ["verify", "--man=no", unit], { encoding: "utf8" });
      expect(r.stderr).toBe("");
      expect(r.status).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
