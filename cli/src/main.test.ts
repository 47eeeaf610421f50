import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { main } from "./main.js";
import type { CliIO } from "./io.js";

function captureIO(cwd: string, stdinText?: string) {
  const out: string[] = [];
  const err: string[] = [];
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdout.on("data", (c: Buffer) => out.push(c.toString()));
  stderr.on("data", (c: Buffer) => err.push(c.toString()));
  const stdin = new PassThrough();
  stdin.end(stdinText ?? "");
  const io: CliIO = { stdout, stderr, stdin, cwd, env: {} };
  return { io, stdout: () => out.join(""), stderr: () => err.join("") };
}

const examples = join(import.meta.dirname, "../../examples");

describe("dstack CLI", () => {
  it("prints help listing apply when run without arguments or with --help", async () => {
    for (const argv of [[], ["--help"]]) {
      const cap = captureIO(examples);
      expect(await main(argv, cap.io)).toBe(0);
      expect(cap.stdout()).toMatch(/Usage: dstack/);
      expect(cap.stdout()).toMatch(/apply/);
    }
  });

  it("prints the package version", async () => {
    const cap = captureIO(examples);
    expect(await main(["--version"], cap.io)).toBe(0);
    expect(cap.stdout().trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it("validates every example with apply --dry-run", async () => {
    for (const file of ["hello", "train", "service", "fleet"]) {
      const cap = captureIO(examples);
      const code = await main(["apply", "-f", `${file}.dstack.yml`, "--dry-run"], cap.io);
      expect(cap.stderr()).toBe("");
      expect(code).toBe(0);
      expect(cap.stdout()).toContain("Configuration is valid");
      expect(cap.stdout()).toContain(`${file}.dstack.yml`);
    }
  });

  it("reports an invalid configuration with file, line and column and exits 2 (usage)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "dstack-cli-"));
    await writeFile(join(dir, ".dstack.yml"), "type: task\ncommands:\n  - echo hi\nresourses:\n  gpu: 1\n");
    const cap = captureIO(dir);
    expect(await main(["apply", "--dry-run"], cap.io)).toBe(2);
    expect(cap.stderr()).toMatch(/^\.dstack\.yml:4:1:/);
    expect(cap.stderr()).toMatch(/resources/); // the did-you-mean hint
    expect(cap.stdout()).toBe("");
  });

  it("reads the configuration from standard input with -f -", async () => {
    const cap = captureIO(examples, "type: task\nname: piped\ncommands: [echo hi]\n");
    expect(await main(["apply", "-f", "-", "--dry-run", "-y"], cap.io)).toBe(0);
    expect(cap.stdout()).toContain("piped");
  });

  it("names the missing file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "dstack-cli-"));
    const cap = captureIO(dir);
    expect(await main(["apply", "-f", "nope.dstack.yml", "--dry-run"], cap.io)).toBe(2);
    expect(cap.stderr()).toContain("nope.dstack.yml: no such file");
    const capDefault = captureIO(dir);
    expect(await main(["apply", "--dry-run"], capDefault.io)).toBe(2);
    expect(capDefault.stderr()).toContain("No .dstack.yml in");
  });

  it("rejects an unknown command or option with a usage error (exit 2)", async () => {
    const cap = captureIO(examples);
    expect(await main(["aplly"], cap.io)).toBe(2);
    expect(cap.stderr()).toMatch(/unknown command 'aplly'/);
    const cap2 = captureIO(examples);
    expect(await main(["ps", "--bogus"], cap2.io)).toBe(2);
    expect(cap2.stderr()).toMatch(/unknown option '--bogus'/);
  });

  it("needs -y to apply a configuration read from standard input", async () => {
    const cap = captureIO(examples, "type: task\ncommands: [echo hi]\n");
    expect(await main(["apply", "-f", "-"], cap.io)).toBe(2);
    expect(cap.stderr()).toMatch(/pass -y/);
  });

  it("says how to configure a server when none is, and exits 1", async () => {
    const home = await mkdtemp(join(tmpdir(), "dstack-cli-home-"));
    const cap = captureIO(examples);
    cap.io.env = { HOME: home };
    expect(await main(["ps"], cap.io)).toBe(1);
    expect(cap.stderr()).toMatch(/No dstack server is configured .*dstack server.*dstack project add/s);
    expect(cap.stderr()).not.toMatch(/\bat .*\.ts:\d+/);
  });

  it("keeps -v as --version before a command and --verbose after `ps`", async () => {
    const cap = captureIO(examples);
    expect(await main(["-v"], cap.io)).toBe(0);
    expect(cap.stdout().trim()).toMatch(/^\d+\.\d+\.\d+$/);
    const help = captureIO(examples);
    expect(await main(["ps", "--help"], help.io)).toBe(0);
    expect(help.stdout()).toMatch(/-v, --verbose/);
  });
});
