import { describe, expect, it } from "vitest";
import { withAdminConnection } from "./db.js";

describe("test database harness", () => {
  it("fails (never skips) when PostgreSQL is unreachable, naming the setup script", async () => {
    await expect(withAdminConnection(async () => 1, "postgresql://dstack:dstack@127.0.0.1:1/dstack_test")).rejects.toThrow(
      /unreachable at postgresql:\/\/dstack:\*\*\*@127\.0\.0\.1:1\/dstack_test .*bash scripts\/setup\.sh/,
    );
  });
});
