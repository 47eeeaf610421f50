// Every refusal over real TLS, with the message an operator would see.
import { createPrivateKey, createPublicKey, X509Certificate } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { EnrollmentService, TaskInfoSchema, TaskState } from "@dstack/proto/agent";
import { agentTransport, createCsr, enroll, generateKey, identityUri, IdentityStore, issueCertificate, renewCertificate } from "@dstack/proto/link";
import { Instance } from "../../server/src/db/entities.js";
import { agentHome, enrollShim, once, simShim, startMesh, type MeshFixture } from "./harness.js";

async function renewError(home: string): Promise<ConnectError> {
  try {
    await renewCertificate(home);
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("renewal unexpectedly succeeded");
}

describe("mesh: identity and refusals", () => {
  let f: MeshFixture;
  beforeAll(async () => {
    f = await startMesh();
  });
  afterAll(async () => f?.cleanup());

  it("creates the CA once, key 0600, and keeps its fingerprint across restarts", async () => {
    const { statSync } = await import("node:fs");
    const mode = statSync(`${f.env.settings.homeDir}/mesh/ca.key`).mode & 0o777;
    expect(mode).toBe(0o600);
    const before = f.mesh.caFingerprint;
    expect(before).toMatch(/^[0-9a-f]{64}$/);
    await f.restart();
    expect(f.mesh.caFingerprint).toBe(before);
  });

  it("refuses a server whose CA does not match the pinned fingerprint (the agent checks)", async () => {
    const token = await f.shimToken();
    await expect(enroll({ serverUrl: f.url, token, caSha256: "ab".repeat(32), kind: "shim", home: agentHome() })).rejects.toThrow(/server CA fingerprint mismatch: expected abab/);
    // The token was not spent on a server the agent did not trust.
    await expect(enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() })).resolves.toMatchObject({ kind: "shim" });
  });

  it("accepts the fingerprint with colons and a sha256: prefix", async () => {
    const colon = "sha256:" + f.mesh.caFingerprint.toUpperCase().match(/../g)!.join(":");
    await expect(enroll({ serverUrl: f.url, token: await f.shimToken(), caSha256: colon, kind: "shim", home: agentHome() })).resolves.toBeDefined();
  });

  it("refuses a reused one-time token and an expired token with clear errors", async () => {
    const token = await f.shimToken();
    await enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() });
    const again = enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() });
    await expect(again).rejects.toThrow(/Join token was already used at/);
    await expect(again).rejects.toMatchObject({ code: Code.Unauthenticated });
    const expired = await f.shimToken({ ttlMs: -1 });
    await expect(enroll({ serverUrl: f.url, token: expired, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() })).rejects.toThrow(/Join token expired at/);
    await expect(enroll({ serverUrl: f.url, token: "dsj.-.not-a-real-token-at-all-000", caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() })).rejects.toThrow(/not recognised/);
  });

  it("lets a reusable token enroll many hosts, each a new instance, until revoked", async () => {
    const created = await f.mesh.joinTokens.create({ projectId: f.projectId, fleetId: f.fleetId, kind: "shim", reusable: true });
    const a = await enroll({ serverUrl: f.url, token: created.token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() });
    const b = await enroll({ serverUrl: f.url, token: created.token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() });
    expect(a.agentId).not.toBe(b.agentId);
    await f.mesh.joinTokens.revoke(created.id);
    await expect(enroll({ serverUrl: f.url, token: created.token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() })).rejects.toThrow(/revoked/);
  });

  it("numbers hosts that enroll at once with one reusable token without sharing a name", async () => {
    const created = await f.mesh.joinTokens.create({ projectId: f.projectId, fleetId: f.fleetId, kind: "shim", reusable: true });
    const ids = await Promise.all(Array.from({ length: 8 }, () => enroll({ serverUrl: f.url, token: created.token, caSha256: f.mesh.caFingerprint, kind: "shim", home: agentHome() })));
    const rows = await f.orm.em.fork().find(Instance, { id: { $in: ids.map((i) => i.agentId) } });
    expect(rows).toHaveLength(8);
    expect(new Set(rows.map((r) => r.name)).size).toBe(8);
    expect(new Set(rows.map((r) => r.instanceNum)).size).toBe(8);
  });

  it("refuses a shim token used by a runner, and binds runner tokens to their job", async () => {
    await expect(enroll({ serverUrl: f.url, token: await f.shimToken(), caSha256: f.mesh.caFingerprint, kind: "runner", home: agentHome() })).rejects.toThrow(/for a shim, but a runner/);
    const jobId = await f.addJob(null);
    const { token } = await f.mesh.joinTokens.create({ projectId: f.projectId, kind: "runner", boundId: jobId });
    const id = await enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "runner", home: agentHome() });
    expect(id.agentId).toBe(jobId);
  });

  it("renews over mutual TLS; the call without a client certificate is refused", async () => {
    const { home } = await enrollShim(f);
    const before = new IdentityStore(home).load();
    const after = await renewCertificate(home);
    expect(after.certPem).not.toBe(before.certPem);
    const { transport, session } = agentTransport(f.url, { caPem: f.mesh.ca.certPem });
    try {
      await expect(createClient(EnrollmentService, transport).renewCertificate({ csrPem: createCsr(generateKey().privateKeyPem) })).rejects.toThrow(/needs a client certificate/);
    } finally {
      session.abort();
    }
  });

  it("refuses a certificate from another CA, even one naming a real agent", async () => {
    const { home, instanceId } = await enrollShim(f);
    const rogueCa = generateKey();
    const now = new Date();
    const rogueCaPem = issueCertificate({ subject: { commonName: "rogue" }, subjectKey: rogueCa.publicKey, issuer: "self", selfKeyPem: rogueCa.privateKeyPem, notBefore: now, notAfter: new Date(+now + 864e5), ca: true });
    const key = generateKey();
    const certPem = issueCertificate({ subject: { commonName: instanceId }, subjectKey: key.publicKey, issuer: { certPem: rogueCaPem, privateKeyPem: rogueCa.privateKeyPem }, notBefore: now, notAfter: new Date(+now + 864e5), usage: ["client"], uris: [identityUri("shim", instanceId)] });
    const store = new IdentityStore(home);
    store.save({ ...store.load(), keyPem: key.privateKeyPem, certPem });
    const e = await renewError(home);
    expect(e.code).toBe(Code.Unauthenticated);
    expect(e.rawMessage).toMatch(/Client certificate rejected \((UNABLE_TO_VERIFY_LEAF_SIGNATURE|.*issuer.*)\)/);
  });

  it("refuses an expired certificate", async () => {
    const { home, instanceId } = await enrollShim(f);
    const store = new IdentityStore(home);
    const cur = store.load();
    const certPem = f.mesh.ca.issue({ commonName: instanceId, subjectKey: createPublicKey(cur.keyPem), lifetimeMs: 1, usage: ["client"], uris: [identityUri("shim", instanceId)] }).certPem;
    store.save({ ...cur, certPem });
    await new Promise((r) => setTimeout(r, 1100)); // notAfter has one-second precision
    const e = await renewError(home);
    expect(e.rawMessage).toMatch(/Client certificate rejected \(CERT_HAS_EXPIRED\)/);
  });

  it("refuses a revoked identity and drops its live link", async () => {
    const { home, instanceId } = await enrollShim(f);
    const shim = simShim(home);
    await shim.link.waitConnected();
    const gone = once(f.mesh.links, "disconnected");
    f.mesh.revoke("shim", instanceId);
    await gone;
    const err = await once<[unknown]>(shim.link, "error");
    expect(String(err[0])).toMatch(/Agent shim\/.* is revoked/);
    expect((await renewError(home)).code).toBe(Code.PermissionDenied);
    await shim.link.close();
  });

  it("issues a job's runner identity on the server (as Enroll would: key, CN, OU, URI, client usage), not for a revoked job", async () => {
    const jobId = await f.addJob(null);
    const id = f.mesh.issueRunnerIdentity(jobId);
    const cert = new X509Certificate(id.certPem);
    expect(cert.verify(new X509Certificate(f.mesh.ca.certPem).publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(id.keyPem))).toBe(true);
    expect(cert.subject).toBe(`O=dstack\nOU=runner\nCN=${jobId}`);
    expect(cert.subjectAltName).toBe(`URI:${identityUri("runner", jobId)}`);
    expect(cert.keyUsage).toEqual(["1.3.6.1.5.5.7.3.2"]);
    expect(Math.floor(id.notAfter.getTime() / 1000) * 1000).toBe(new Date(cert.validTo).getTime()); // the certificate has one-second precision
    expect(id.renewAfter.getTime()).toBeLessThan(id.notAfter.getTime());
    // The identity works on the agent port: a runner linking with it is that job's runner.
    const home = agentHome();
    new IdentityStore(home).save({ kind: "runner", agentId: jobId, serverUrl: f.url, caSha256: f.mesh.caFingerprint, notAfter: id.notAfter.toISOString(), renewAfter: id.renewAfter.toISOString(), keyPem: id.keyPem, certPem: id.certPem, caPem: f.mesh.ca.certPem });
    await renewCertificate(home);
    f.mesh.revoke("runner", jobId);
    expect(() => f.mesh.issueRunnerIdentity(jobId)).toThrow(/revoked/);
  });

  it("rejects a shim reporting another instance's task, at connect and mid-stream", async () => {
    const mine = await enrollShim(f);
    const other = await enrollShim(f);
    const myJob = await f.addJob(mine.instanceId);
    const theirJob = await f.addJob(other.instanceId);
    // At connect: the state report names a foreign task.
    const bad = simShim(mine.home, [myJob, theirJob]);
    const err = await once<[unknown]>(bad.link, "error");
    expect(ConnectError.from(err[0]).code).toBe(Code.PermissionDenied);
    expect(String(err[0])).toMatch(new RegExp(`shim ${mine.instanceId} may not report task ${theirJob}`));
    expect(f.mesh.links.shim(mine.instanceId).connected).toBe(false);
    await bad.link.close();
    // Mid-stream: an honest state report, then a forged task event.
    const good = simShim(mine.home, [myJob]);
    await good.link.waitConnected();
    const violation = once<[unknown, Error]>(f.mesh.links, "violation");
    good.link.sendEvent({ event: { case: "taskStateChanged", value: { task: create(TaskInfoSchema, { taskId: theirJob, state: TaskState.TERMINATED, updatedAt: timestampNow() }) } } });
    const [, e] = await violation;
    expect(e.message).toMatch(/may not report task/);
    await good.link.close();
  });

  it("rejects a runner reporting another job", async () => {
    const jobId = await f.addJob(null);
    const otherJob = await f.addJob(null);
    const { token } = await f.mesh.joinTokens.create({ projectId: f.projectId, kind: "runner", boundId: jobId });
    const home = agentHome();
    await enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "runner", home });
    const { connectLink } = await import("@dstack/proto/link");
    const link = connectLink({ kind: "runner", home, backoff: { initialMs: 50, maxMs: 100 }, handlers: {}, stateReport: () => ({ jobSubmissionId: otherJob }) });
    const err = await once<[unknown]>(link, "error");
    expect(String(err[0])).toMatch(/may not report job/);
    await link.close();
    // A runner certificate cannot open the shim link.
    const shimStyle = (await import("./harness.js")).simShim(home);
    const e2 = await once<[unknown]>(shimStyle.link, "error");
    expect(String(e2[0])).toMatch(/A runner certificate cannot open the ShimLinkService link/);
    await shimStyle.link.close();
  });
});
