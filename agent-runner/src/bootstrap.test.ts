import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPublicKey } from "node:crypto";
import { certificateFingerprint, generateKey, issueCertificate } from "@dstack/proto/link";
import { describe, expect, it } from "vitest";
import { readBootstrap } from "./bootstrap.js";
import { parseArgs } from "./main.js";

describe("bootstrap", () => {
  it("reads bootstrap.json and pins the SHA-256 of the CA it carries", () => {
    const key = generateKey();
    const now = Date.now();
    const ca = issueCertificate({
      subject: { commonName: "test CA" },
      subjectKey: createPublicKey(key.privateKeyPem),
      issuer: "self",
      selfKeyPem: key.privateKeyPem,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3600_000),
      ca: true,
    });
    const home = mkdtempSync(join(tmpdir(), "runner-home-"));
    writeFileSync(join(home, "bootstrap.json"), JSON.stringify({ joinToken: "dsj.x.y", agentUrl: "https://172.17.0.1:3001", caCertificatePem: ca }));
    expect(readBootstrap(home, {})).toEqual({ joinToken: "dsj.x.y", agentUrl: "https://172.17.0.1:3001", caSha256: certificateFingerprint(ca), serverName: undefined, source: join(home, "bootstrap.json") });
  });

  it("falls back to the environment where no shim writes a file", () => {
    const home = mkdtempSync(join(tmpdir(), "runner-home-"));
    expect(readBootstrap(home, {})).toBeNull();
    expect(readBootstrap(home, { DSTACK_RUNNER_JOIN_TOKEN: "t", DSTACK_RUNNER_AGENT_URL: "https://s:3001", DSTACK_RUNNER_CA_SHA256: "sha256:AB:CD" })).toMatchObject({
      joinToken: "t",
      agentUrl: "https://s:3001",
      caSha256: "abcd",
      source: "environment",
    });
    expect(() => readBootstrap(home, { DSTACK_RUNNER_JOIN_TOKEN: "t" })).toThrow(/DSTACK_RUNNER_AGENT_URL, DSTACK_RUNNER_CA_SHA256 not set/);
  });

  it("names what is wrong with a bad bootstrap.json", () => {
    const home = mkdtempSync(join(tmpdir(), "runner-home-"));
    writeFileSync(join(home, "bootstrap.json"), JSON.stringify({ joinToken: "t", agentUrl: "u" }));
    expect(() => readBootstrap(home, {})).toThrow(/lacks "caCertificatePem"/);
    writeFileSync(join(home, "bootstrap.json"), "{");
    expect(() => readBootstrap(home, {})).toThrow(/not valid JSON/);
  });
});

describe("command line", () => {
  it("takes --home (default /dstack/task), --version and --help", () => {
    expect(parseArgs([])).toEqual({ home: "/dstack/task", version: false, help: false });
    expect(parseArgs(["--home", "/tmp/x", "--version"])).toEqual({ home: "/tmp/x", version: true, help: false });
    expect(parseArgs(["--home=/tmp/y", "--help"]).home).toBe("/tmp/y");
    expect(() => parseArgs(["--bogus"])).toThrow(/unknown argument '--bogus'/);
  });
});
