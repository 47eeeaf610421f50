// Fetches a content-addressed blob (repo code, `files:` archive) with CodeService.Download into
// `<dir>/<sha256>`: resumes from what already arrived after a cut, checks size and SHA-256, and
// reuses a verified file on a runner restart.
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, openSync, closeSync, renameSync, statSync, writeFileSync, writeSync, rmSync } from "node:fs";
import { join } from "node:path";
import { createClient, type Transport } from "@connectrpc/connect";
import { CodeService } from "@dstack/proto/agent";
import { backoffDelay, type BackoffOptions } from "@dstack/proto/link";

export interface DownloadOptions {
  sha256: string;
  /** Expected size from the BlobRef; 0 = unknown. */
  sizeBytes?: number;
  dir: string;
  connect(): { transport: Transport; close(): void };
  /** Attempts before giving up; default 8. */
  attempts?: number;
  backoff?: Partial<BackoffOptions>;
  signal?: AbortSignal;
  /** Told about each retry (runner diagnostics). */
  onRetry?(attempt: number, error: unknown, offset: number): void;
  /** The blob as SubmitJob carried it (small blobs): used when it hashes to `sha256`, else downloaded. */
  inline?: Uint8Array;
}

export class DownloadError extends Error {
  override name = "DownloadError";
}

async function hashFile(path: string, h = createHash("sha256")): Promise<ReturnType<typeof createHash>> {
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h;
}

/** Downloads (or finds) the blob and returns its path. */
export async function downloadBlob(o: DownloadOptions): Promise<string> {
  const sha = o.sha256.toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(sha)) throw new DownloadError(`bad blob hash '${o.sha256}'`);
  mkdirSync(o.dir, { recursive: true });
  const final = join(o.dir, sha);
  const part = `${final}.part`;
  if (existsSync(final) && (await hashFile(final)).digest("hex") === sha) return final;
  if (o.inline?.length && createHash("sha256").update(o.inline).digest("hex") === sha) {
    writeFileSync(part, o.inline);
    renameSync(part, final);
    return final;
  }
  const backoff: BackoffOptions = { initialMs: 200, maxMs: 5_000, ...o.backoff };
  const attempts = o.attempts ?? 8;
  for (let attempt = 0; ; attempt++) {
    const offset = existsSync(part) ? statSync(part).size : 0;
    try {
      const total = await fetchFrom(o, sha, part, offset);
      const got = statSync(part).size;
      if (got !== total) throw new DownloadError(`blob ${sha}: got ${got} bytes, the server announced ${total}`);
      if (o.sizeBytes && o.sizeBytes !== total) throw new DownloadError(`blob ${sha}: ${total} bytes, the job spec says ${o.sizeBytes}`);
      const digest = (await hashFile(part)).digest("hex");
      if (digest !== sha) {
        rmSync(part, { force: true }); // a corrupt prefix would poison every resume
        throw new DownloadError(`blob ${sha}: content hashes to ${digest}`);
      }
      renameSync(part, final);
      return final;
    } catch (e) {
      if (o.signal?.aborted) throw e;
      if (e instanceof DownloadError || attempt + 1 >= attempts) {
        throw e instanceof DownloadError ? e : new DownloadError(`cannot download blob ${sha}: ${e instanceof Error ? e.message : String(e)}`);
      }
      o.onRetry?.(attempt + 1, e, existsSync(part) ? statSync(part).size : 0);
      await new Promise((r) => setTimeout(r, backoffDelay(attempt + 1, backoff)));
    }
  }
}

/** One stream from `offset`; appends to `part` and returns the announced total size. */
async function fetchFrom(o: DownloadOptions, sha: string, part: string, offset: number): Promise<number> {
  const conn = o.connect();
  const fd = openSync(part, "a");
  let total = -1;
  let at = offset;
  try {
    const client = createClient(CodeService, conn.transport);
    for await (const res of client.download({ sha256: sha, offset: BigInt(offset) }, { signal: o.signal })) {
      if (res.sha256 && res.sha256.toLowerCase() !== sha) throw new DownloadError(`asked for blob ${sha}, the server sent ${res.sha256}`);
      total = Number(res.totalSize);
      if (Number(res.offset) !== at) throw new DownloadError(`blob ${sha}: expected a chunk at ${at}, got one at ${res.offset}`);
      if (at + res.data.length > total) throw new DownloadError(`blob ${sha}: chunk runs past the announced size ${total}`);
      if (res.data.length) writeSync(fd, res.data);
      at += res.data.length;
    }
  } finally {
    closeSync(fd);
    conn.close();
  }
  if (total < 0) throw new Error(`blob ${sha}: the server sent nothing`);
  return total;
}
