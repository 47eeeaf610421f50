import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import * as agent from "@dstack/proto/agent";
import * as api from "@dstack/proto/api";

const src = import.meta.dirname;

describe("the @dstack/proto/api and /agent entry points", () => {
  for (const pkg of ["api", "agent"] as const) {
    it(`re-export every generated file of dstack.${pkg}.v1`, () => {
      const generated = readdirSync(join(src, `../gen/dstack/${pkg}/v1`)).filter((f) => f.endsWith("_pb.ts"));
      const barrel = readFileSync(join(src, `${pkg}.ts`), "utf8");
      const missing = generated.filter((f) => !barrel.includes(`/${f.replace(/\.ts$/, ".js")}"`));
      expect(missing, `add these to proto/src/${pkg}.ts`).toEqual([]);
    });
  }

  it("resolve through the package's subpath exports", () => {
    expect(api.RunService.typeName).toBe("dstack.api.v1.RunService");
    expect(agent.ShimLinkService.typeName).toBe("dstack.agent.v1.ShimLinkService");
  });
});
