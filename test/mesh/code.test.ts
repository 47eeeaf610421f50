// CodeService.Download over real mTLS: chunking, integrity, resume, and which blobs a runner may read.
import { createHash, randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { CodeService, type DownloadResponse } from "@dstack/proto/agent";
import { agentTransport, enroll, IdentityStore } from "@dstack/proto/link";
import { CodeBlob, Job, Project, Run, User, build } from "../../server/src/db/entities.js";
import { CODE_CHUNK_BYTES, meshDataHooks } from "../../server/src/mesh/index.js";
import { createServices } from "../../server/src/services/index.js";
import { agentHome, enrollShim, startMesh, type MeshFixture } from "./harness.js";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function download(client: Client<typeof CodeService>, sha256: string, offset = 0): Promise<DownloadResponse[]> {
  const out: DownloadResponse[] = [];
  for await (const m of client.download({ sha256, offset: BigInt(offset) })) out.push(m);
  return out;
}

async function errorOf(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("the call unexpectedly succeeded");
}

describe("mesh: CodeService.Download", () => {
  let f: MeshFixture;
  let client: Client<typeof CodeService>;
  let close: () => void;
  let job: string;
  const code = randomBytes(3_000_000); // the run's repo code: 3 MB, above the upload default on purpose
  const unused = randomBytes(1000); // in the project, but the run does not use it
  const foreign = randomBytes(1000); // in another project; the run names its hash anyway

  beforeAll(async () => {
    f = await startMesh();
    await f.restart({ data: meshDataHooks(f.orm, createServices(f.orm, f.env.settings)) });
    const em = f.orm.em.fork();
    const owner = await em.findOneOrFail(User, { name: "admin" });
    const other = build(Project, { name: "other", owner: owner as never, sshPublicKey: "k", sshPrivateKey: "k" });
    const project = em.getReference(Project, f.projectId);
    const run = build(Run, { runName: "coded", project: project as never, user: owner as never, runSpec: { repoCodeHash: sha(code), extra: { fileArchives: [{ archiveHash: sha(foreign), path: "x" }] } } });
    const j = build(Job, { run: run as never });
    em.persist([
      other,
      run,
      j,
      build(CodeBlob, { project: project as never, blobHash: sha(code), blob: code }),
      build(CodeBlob, { project: project as never, blobHash: sha(unused), blob: unused }),
      build(CodeBlob, { project: other as never, blobHash: sha(foreign), blob: foreign }),
    ]);
    await em.flush();
    job = j.id;
    const { token } = await f.mesh.joinTokens.create({ projectId: f.projectId, kind: "runner", boundId: job });
    const home = agentHome();
    await enroll({ serverUrl: f.url, token, caSha256: f.mesh.caFingerprint, kind: "runner", home });
    const id = new IdentityStore(home).load();
    const { transport, session } = agentTransport(f.url, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem });
    client = createClient(CodeService, transport);
    close = () => session.abort();
  });
  afterAll(async () => {
    close?.();
    await f?.cleanup();
  });

  it("streams a 3 MB blob in 256 KiB chunks, each with total size and hash; the bytes hash to the sha256", async () => {
    const msgs = await download(client, sha(code));
    expect(msgs.length).toBe(Math.ceil(code.length / CODE_CHUNK_BYTES));
    let at = 0;
    for (const m of msgs) {
      expect(Number(m.offset)).toBe(at);
      expect(m.totalSize).toBe(BigInt(code.length));
      expect(m.sha256).toBe(sha(code));
      expect(m.data.length).toBeLessThanOrEqual(CODE_CHUNK_BYTES);
      at += m.data.length;
    }
    const got = Buffer.concat(msgs.map((m) => m.data));
    expect(got.length).toBe(code.length);
    expect(sha(got)).toBe(sha(code));
  });

  it("resumes from an offset; at the end sends one empty chunk; beyond it refuses with OUT_OF_RANGE", async () => {
    const from = 1_000_003;
    const msgs = await download(client, sha(code).toUpperCase(), from);
    expect(Number(msgs[0]!.offset)).toBe(from);
    expect(Buffer.concat(msgs.map((m) => m.data)).equals(code.subarray(from))).toBe(true);
    const end = await download(client, sha(code), code.length);
    expect(end.map((m) => [Number(m.offset), m.data.length, Number(m.totalSize)])).toEqual([[code.length, 0, code.length]]);
    const e = await errorOf(download(client, sha(code), code.length + 1));
    expect(e.code).toBe(Code.OutOfRange);
    expect(e.rawMessage).toBe(`Offset ${code.length + 1} is beyond the end of blob ${sha(code)} (${code.length} bytes); resume from at most ${code.length}.`);
  });

  it("answers NOT_FOUND for an unknown hash, a blob its run does not use, and another project's blob", async () => {
    for (const h of ["ab".repeat(32), sha(unused), sha(foreign)]) {
      const e = await errorOf(download(client, h));
      expect(e.code).toBe(Code.NotFound);
      expect(e.rawMessage).toBe(`Blob ${h} is not available to job ${job}: it was never uploaded to the job's project, or the job's run does not use it.`);
    }
  });

  it("refuses a malformed hash, a shim, and a caller without a certificate", async () => {
    const bad = await errorOf(download(client, "../etc/passwd"));
    expect(bad.code).toBe(Code.InvalidArgument);
    const id = new IdentityStore((await enrollShim(f)).home).load();
    const shim = agentTransport(f.url, { caPem: id.caPem, certPem: id.certPem, keyPem: id.keyPem });
    const e = await errorOf(download(createClient(CodeService, shim.transport), sha(code)));
    expect(e.code).toBe(Code.PermissionDenied);
    expect(e.rawMessage).toBe("A shim certificate cannot open the CodeService link.");
    shim.session.abort();
    const anon = agentTransport(f.url, { caPem: id.caPem });
    expect((await errorOf(download(createClient(CodeService, anon.transport), sha(code)))).code).toBe(Code.Unauthenticated);
    anon.session.abort();
  });
});
