import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { DstackError, ERRORS, err, toConnectError, type ErrorCode } from "./errors.js";

describe("error catalogue", () => {
  it.each(Object.keys(ERRORS) as ErrorCode[])("%s maps to a Connect code and a DSTACK_ code", (code) => {
    expect(code).toMatch(/^DSTACK_[A-Z_]+$/);
    expect(typeof Code[ERRORS[code].status]).toBe("number");
    expect(ERRORS[code].message.length).toBeGreaterThan(10);
  });

  it("fills the message template and keeps the code and status", () => {
    const e = err("DSTACK_SECRET_NOT_FOUND", { secret: "HF_TOKEN", project: "main" });
    expect(e).toBeInstanceOf(DstackError);
    expect(e.message).toBe("Secret 'HF_TOKEN' does not exist in project 'main'. Set it with `dstack secret set HF_TOKEN <value>`.");
    expect(e.status).toBe("NotFound");
  });

  it("becomes a ConnectError carrying the catalogue code", () => {
    const c = toConnectError(err("DSTACK_PERMISSION_DENIED", { action: "x", required: "y" }));
    expect(c.code).toBe(Code.PermissionDenied);
    expect(c.metadata.get("x-dstack-error")).toBe("DSTACK_PERMISSION_DENIED");
    expect(c.rawMessage).toBe("Access denied: x requires y.");
  });
});
