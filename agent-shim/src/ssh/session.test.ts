import { describe, expect, it } from "vitest";
import { DockerDemuxer } from "./session.js";

function frame(kind: number, text: string): Buffer {
  const body = Buffer.from(text);
  const header = Buffer.alloc(8);
  header[0] = kind;
  header.writeUInt32BE(body.length, 4);
  return Buffer.concat([header, body]);
}

describe("DockerDemuxer", () => {
  const stream = Buffer.concat([frame(1, "out one\n"), frame(2, "err\n"), frame(1, ""), frame(1, "out two\n")]);

  function run(chunks: Buffer[]): { out: string; err: string } {
    const d = new DockerDemuxer();
    let out = "";
    let err = "";
    for (const c of chunks) {
      for (const [kind, data] of d.push(c)) {
        if (kind === 2) err += data.toString();
        else out += data.toString();
      }
    }
    return { out, err };
  }

  it("splits stdout and stderr frames", () => {
    expect(run([stream])).toEqual({ out: "out one\nout two\n", err: "err\n" });
  });

  it("copes with frames split at every possible byte", () => {
    for (let cut = 1; cut < stream.length; cut++) {
      expect(run([stream.subarray(0, cut), stream.subarray(cut)])).toEqual({ out: "out one\nout two\n", err: "err\n" });
    }
    expect(run([...stream].map((b) => Buffer.from([b])))).toEqual({ out: "out one\nout two\n", err: "err\n" });
  });
});
