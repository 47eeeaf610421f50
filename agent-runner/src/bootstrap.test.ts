import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPublicKey } from "node:crypto";
import { certificateFingerprint, generateKey, identityUri, IdentityStore, issueCertificate, type AgentKindName } from "@dstack/proto/link";
import { describe, expect, it } from "vitest";
import { adoptIssuedIdentity, readBootstrap } from "./bootstrap.js";
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

/** A self-signed test CA and a way to issue agent certificates from it. */
function testCa() {
  const key = generateKey();
  const now = Date.now();
  const certPem = issueCertificate({
    subject: { commonName: "test CA" },
    subjectKey: key.publicKey,
    issuer: "self",
    selfKeyPem: key.privateKeyPem,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 3600_000),
    ca: true,
  });
  return {
    certPem,
    issue(kind: AgentKindName, id: string) {
      const leaf = generateKey();
      const cert = issueCertificate({
        subject: { commonName: id, organizationalUnit: kind },
        subjectKey: leaf.publicKey,
        issuer: { certPem, privateKeyPem: key.privateKeyPem },
        notBefore: new Date(now - 60_000),
        notAfter: new Date(now + 1800_000),
        usage: ["client"],
        uris: [identityUri(kind, id)],
      });
      return { certPem: cert, keyPem: leaf.privateKeyPem };
    },
  };
}

describe("a job identity issued by the server", () => {
  const jobId = "0b6a3c1e-5d4f-4a2b-9c8d-7e6f5a4b3c2d";

  it("is read from bootstrap.json (no join token needed), checked against the CA and stored as the runner's identity", () => {
    const ca = testCa();
    const issued = ca.issue("runner", jobId);
    const home = mkdtempSync(join(tmpdir(), "runner-home-"));
    writeFileSync(
      join(home, "bootstrap.json"),
      JSON.stringify({ agentUrl: "https://host.docker.internal:3001", serverName: "127.0.0.1", caCertificatePem: ca.certPem, certificatePem: issued.certPem, privateKeyPem: issued.keyPem, renewAfter: "2030-01-01T00:00:00.000Z" }),
    );
    const b = readBootstrap(home, {})!;
    expect(b.joinToken).toBe("");
    expect(b.identity).toEqual({ certPem: issued.certPem, keyPem: issued.keyPem, caPem: ca.certPem, renewAfter: "2030-01-01T00:00:00.000Z" });
    const store = new IdentityStore(join(home, "identity"));
    adoptIssuedIdentity(b, ca.certPem, store);
    const id = store.load();
    expect(id).toMatchObject({ kind: "runner", agentId: jobId, serverUrl: "https://host.docker.internal:3001", servername: "127.0.0.1", caSha256: certificateFingerprint(ca.certPem), renewAfter: "2030-01-01T00:00:00.000Z" });
    expect(id.certPem).toBe(issued.certPem);
    expect(id.keyPem).toBe(issued.keyPem);
    expect(id.caPem).toBe(ca.certPem);
    expect(new Date(id.notAfter).getTime()).toBeGreaterThan(Date.now());
  });

  it("comes from the environment too", () => {
    const ca = testCa();
    const issued = ca.issue("runner", jobId);
    const home = mkdtempSync(join(tmpdir(), "runner-home-"));
    const b = readBootstrap(home, { DSTACK_RUNNER_AGENT_URL: "https://s:3001", DSTACK_RUNNER_CA_SHA256: certificateFingerprint(ca.certPem), DSTACK_RUNNER_CERTIFICATE_PEM: issued.certPem, DSTACK_RUNNER_PRIVATE_KEY_PEM: issued.keyPem })!;
    expect(b.identity).toEqual({ certPem: issued.certPem, keyPem: issued.keyPem });
    adoptIssuedIdentity(b, ca.certPem, new IdentityStore(join(home, "identity")));
    expect(new IdentityStore(join(home, "identity")).load().agentId).toBe(jobId);
  });

  it("is refused when another CA signed it, it names a shim, its key is not its own, or the CA is not the pinned one", () => {
    const ca = testCa();
    const other = testCa();
    const home = mkdtempSync(join(tmpdir(), "runner-home-"));
    const store = new IdentityStore(join(home, "identity"));
    const bootstrap = (i: { certPem: string; keyPem: string }, caPem = ca.certPem) => ({ joinToken: "", agentUrl: "https://s:3001", caSha256: certificateFingerprint(caPem), source: "test", identity: i });
    expect(() => adoptIssuedIdentity(bootstrap(other.issue("runner", jobId)), ca.certPem, store)).toThrow(/not signed by the pinned CA/);
    expect(() => adoptIssuedIdentity(bootstrap(ca.issue("shim", jobId)), ca.certPem, store)).toThrow(/does not name a runner identity/);
    const a = ca.issue("runner", jobId);
    const b = ca.issue("runner", jobId);
    expect(() => adoptIssuedIdentity(bootstrap({ certPem: a.certPem, keyPem: b.keyPem }), ca.certPem, store)).toThrow(/does not match the certificate/);
    expect(() => adoptIssuedIdentity(bootstrap(a, other.certPem), ca.certPem, store)).toThrow(/does not match the pinned fingerprint/);
    expect(store.exists()).toBe(false);
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
