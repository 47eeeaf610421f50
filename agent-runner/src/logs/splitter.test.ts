import { describe, expect, it } from "vitest";
import { LineSplitter } from "./splitter.js";

describe("line splitter", () => {
  it("sends the complete lines of a read as one entry and keeps the partial line", () => {
    const out: string[] = [];
    const s = new LineSplitter((d) => out.push(d.toString()), 60_000);
    s.write(Buffer.from("a\nb\npart"));
    expect(out).toEqual(["a\nb\n"]);
    s.write(Buffer.from("ial\n"));
    expect(out).toEqual(["a\nb\n", "partial\n"]);
    s.flush();
    expect(out).toHaveLength(2);
  });

  it("flushes a partial line (a prompt, a progress bar) when its time runs out", async () => {
    const out: string[] = [];
    const s = new LineSplitter((d) => out.push(d.toString()), 10);
    s.write(Buffer.from("Downloading... 42%"));
    expect(out).toEqual([]);
    await new Promise<void>((ok) => {
      const t = setInterval(() => out.length && (clearInterval(t), ok()), 5);
    });
    expect(out).toEqual(["Downloading... 42%"]);
  });

  it("never emits an entry above the size limit", () => {
    const out: Buffer[] = [];
    const s = new LineSplitter((d) => out.push(d), 60_000, 16);
    s.write(Buffer.from("x".repeat(40)));
    s.write(Buffer.from("y".repeat(20) + "\n"));
    s.flush();
    expect(out.every((b) => b.length <= 16)).toBe(true);
    expect(Buffer.concat(out).toString()).toBe("x".repeat(40) + "y".repeat(20) + "\n");
  });
});
