// CodeService.Download: a runner fetches a blob its run uses (repo code, `files:` archives) in
// 256 KiB chunks, from an offset to resume an interrupted download. Every chunk carries the
// total size and the hash, so the runner can check both whichever chunk it starts from.
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import { DownloadResponseSchema, type DownloadRequest, type DownloadResponse } from "@dstack/proto/agent";
import { meshErr } from "./errors.js";
import { requireData, requireRunner, type DataPlaneDeps } from "./logs.js";

/** The proto's limit per message. */
export const CODE_CHUNK_BYTES = 256 * 1024;

export function codeService(deps: DataPlaneDeps) {
  return {
    async *download(req: DownloadRequest, ctx: HandlerContext): AsyncGenerator<DownloadResponse> {
      const peer = requireRunner(deps, ctx, "CodeService");
      const data = requireData(deps, "CodeService");
      const sha256 = req.sha256.toLowerCase();
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw meshErr("MESH_PROTOCOL", { reason: `sha256 must be 64 hex digits, got '${req.sha256}'` });
      const blob = await data.readCode(peer.id, sha256);
      if (!blob) throw meshErr("MESH_BLOB_NOT_FOUND", { sha256, job: peer.id });
      const size = blob.byteLength;
      if (req.offset > BigInt(size)) throw meshErr("MESH_BLOB_OFFSET", { offset: String(req.offset), sha256, size });
      const totalSize = BigInt(size);
      let offset = Number(req.offset);
      // At the end already: one empty chunk still tells the runner the size and hash.
      do {
        const chunk = blob.subarray(offset, offset + CODE_CHUNK_BYTES);
        yield create(DownloadResponseSchema, { totalSize, sha256, offset: BigInt(offset), data: chunk });
        offset += chunk.byteLength;
      } while (offset < size && !ctx.signal.aborted);
    },
  };
}
