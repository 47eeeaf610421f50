// Random mutations of valid configurations must never crash the parser: every input gives a
// normalized configuration or a ConfigurationError with a sensible position.
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parse as parseYaml, stringify } from "yaml";
import { ConfigurationError, fromProtoConfiguration, parseConfiguration, toProtoConfiguration } from "./index.js";

const here = dirname(fileURLToPath(import.meta.url));
const dir = join(here, "fixtures/dstack-docs");
const texts = readdirSync(dir)
  .filter((f) => f.endsWith(".dstack.yml"))
  .sort()
  .map((f) => readFileSync(join(dir, f), "utf8"));

type Json = unknown;
type Path = (string | number)[];

function paths(v: Json, prefix: Path = []): Path[] {
  const out: Path[] = [prefix];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (v && typeof v === "object") for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

function parentOf(root: Json, path: Path): [Record<string | number, Json> | Json[], string | number] | undefined {
  if (path.length === 0) return undefined;
  let node = root as Record<string | number, Json>;
  for (const seg of path.slice(0, -1)) node = node[seg] as Record<string | number, Json>;
  return [node, path[path.length - 1]!];
}

// Values that exercise the grammar as well as the types.
const grammarish = fc.constantFrom("..", "1..", "..8", "8..2", "A100:80GB:2", "nvidia:24GB..:1..2", "A10G,A100", "x86:16", "arm:x86", "16GB", "16XB", "off", "5m", "-1", "*:8080", "80:80:80", "vol:/data", "/a:/b", "a:b:c", "${{ secrets.x }}", "", "0", "tpu-v5e-8", "auto", null, true, -3, 1e309, 3.1);
const randomValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), grammarish);

type Op =
  | { kind: "delete"; at: number }
  | { kind: "retype"; at: number; value: Json }
  | { kind: "duplicate"; at: number; key: string }
  | { kind: "insertText"; at: number; text: string }
  | { kind: "deleteText"; at: number; length: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant("delete" as const), at: fc.nat() }),
  fc.record({ kind: fc.constant("retype" as const), at: fc.nat(), value: randomValue }),
  fc.record({ kind: fc.constant("duplicate" as const), at: fc.nat(), key: fc.oneof(fc.string({ maxLength: 8 }), fc.constantFrom("nodes", "gpu", "comands", "replicas", "type")) }),
  fc.record({ kind: fc.constant("insertText" as const), at: fc.nat(), text: fc.oneof(fc.string({ maxLength: 6 }), fc.constantFrom(":", "- ", "\n  ", "{", "]", "&a", "*a", "!!binary", "\t", "#")) }),
  fc.record({ kind: fc.constant("deleteText" as const), at: fc.nat(), length: fc.integer({ min: 1, max: 12 }) }),
);

function mutate(text: string, ops: Op[]): string {
  for (const o of ops) {
    if (o.kind === "insertText") {
      const at = o.at % (text.length + 1);
      text = text.slice(0, at) + o.text + text.slice(at);
      continue;
    }
    if (o.kind === "deleteText") {
      const at = o.at % (text.length + 1);
      text = text.slice(0, at) + text.slice(at + o.length);
      continue;
    }
    let data: Json;
    try {
      data = parseYaml(text, { logLevel: "error" });
    } catch {
      continue;
    }
    const all = paths(data);
    const path = all[o.at % all.length]!;
    const parent = parentOf(data, path);
    if (o.kind === "retype") {
      if (parent) (parent[0] as Record<string | number, Json>)[parent[1]] = o.value;
      else data = o.value;
    } else if (o.kind === "delete" && parent) {
      if (Array.isArray(parent[0])) parent[0].splice(parent[1] as number, 1);
      else delete (parent[0] as Record<string | number, Json>)[parent[1]];
    } else if (o.kind === "duplicate" && parent && !Array.isArray(parent[0])) {
      (parent[0] as Record<string, Json>)[o.key] = (parent[0] as Record<string | number, Json>)[parent[1]];
    }
    text = stringify(data);
  }
  return text;
}

describe("parser robustness", () => {
  it("never crashes on mutated configurations", () => {
    const outcomes = { parsed: 0, rejected: 0 };
    fc.assert(
      fc.property(fc.nat({ max: texts.length - 1 }), fc.array(op, { minLength: 1, maxLength: 4 }), (index, ops) => {
        const text = mutate(texts[index]!, ops);
        const lines = text.split("\n").length;
        try {
          const config = parseConfiguration(text, "fuzz.dstack.yml");
          outcomes.parsed++;
          // Whatever parses must survive the trip through protobuf.
          expect(fromProtoConfiguration(toProtoConfiguration(config))).toEqual(config);
        } catch (e) {
          if (!(e instanceof ConfigurationError)) throw e;
          outcomes.rejected++;
          expect(e.issues.length).toBeGreaterThan(0);
          for (const issue of e.issues) {
            expect(issue.line).toBeGreaterThanOrEqual(1);
            expect(issue.line).toBeLessThanOrEqual(lines + 1);
            expect(issue.column).toBeGreaterThanOrEqual(1);
            expect(issue.message.length).toBeGreaterThan(0);
          }
          expect(e.message.startsWith("fuzz.dstack.yml:")).toBe(true);
        }
      }),
      { seed: 20240607, numRuns: 1500 },
    );
    // The mutations must exercise both outcomes to mean anything.
    expect(outcomes.parsed).toBeGreaterThan(100);
    expect(outcomes.rejected).toBeGreaterThan(100);
  });

  it("never crashes on arbitrary text", () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (text) => {
        try {
          parseConfiguration(`type: task\n${text}`, "fuzz.dstack.yml");
        } catch (e) {
          if (!(e instanceof ConfigurationError)) throw e;
        }
      }),
      { seed: 7, numRuns: 500 },
    );
  });
});
