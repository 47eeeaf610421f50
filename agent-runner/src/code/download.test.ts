import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { downloadBlob } from "./download.js";

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
/** A server that must not be asked: the blob came with SubmitJob. */
const unreachable = () => {
  throw new Error("no server here");
};

describe("downloadBlob with the blob inline (small blobs ride inside SubmitJob)", () => {
  it("writes the inline bytes when they hash to the expected sha256, without any connection", async () => {
    const bytes = new TextEncoder().encode("tar bytes, small enough to travel with the job");
    const dir = mkdtempSync(join(tmpdir(), "runner-blobs-"));
    const file = await downloadBlob({ sha256: sha(bytes), sizeBytes: bytes.length, dir, connect: unreachable, inline: bytes, attempts: 1 });
    expect(file).toBe(join(dir, sha(bytes)));
    expect(readFileSync(file)).toEqual(Buffer.from(bytes));
  });

  it("ignores inline bytes that do not match the hash and downloads instead", async () => {
    const expected = new TextEncoder().encode("the real blob");
    const dir = mkdtempSync(join(tmpdir(), "runner-blobs-"));
    await expect(downloadBlob({ sha256: sha(expected), dir, connect: unreachable, inline: new TextEncoder().encode("something else"), attempts: 1 })).rejects.toThrow(/no server here/);
  });
});
