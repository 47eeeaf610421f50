// formatSpecDiff: the changed fields of a plan as dstack's CLI lists them.
import { describe, expect, it } from "vitest";
import { formatSpecDiff } from "./plan.js";

describe("formatSpecDiff", () => {
  it("nothing changed is null", () => {
    expect(formatSpecDiff([])).toBeNull();
  });
  it("spec fields by dstack's names, configuration properties nested", () => {
    expect(formatSpecDiff(["repo_code_hash", "configuration.commands", "configuration.env", "file_archives"])).toBe(
      ["  - Repo files", "  - file_archives", "  - Configuration properties:", "    - commands", "    - env"].join("\n"),
    );
  });
  it("a changed configuration type is said once", () => {
    expect(formatSpecDiff(["configuration.type"])).toBe("  - Configuration type");
  });
});
