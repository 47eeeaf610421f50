// Request checks at the API edge. Every message says which field (proto path, snake_case)
// is wrong, so a curl user can fix the request without reading server code. Name rules
// themselves live in services/names.ts; here they are only tagged with the field path.
import { Code, ConnectError } from "@connectrpc/connect";
import { isDstackError } from "../errors.js";
import { checkName } from "../services/names.js";

export const INVALID_REQUEST = "DSTACK_INVALID_REQUEST";

export function invalidArgument(field: string, reason: string): ConnectError {
  return new ConnectError(`${field}: ${reason}`, Code.InvalidArgument, { "x-dstack-error": INVALID_REQUEST, "x-dstack-field": field });
}

export function requireText(field: string, value: string): string {
  if (value.trim() === "") throw invalidArgument(field, "is required");
  return value;
}

export function requireName(field: string, kind: "user" | "project" | "secret", value: string): string {
  requireText(field, value);
  try {
    return checkName(kind, value);
  } catch (e) {
    if (isDstackError(e, "DSTACK_INVALID_NAME")) throw invalidArgument(field, e.message);
    throw e;
  }
}

export function requireNames(field: string, kind: "user" | "project" | "secret", values: readonly string[]): string[] {
  if (values.length === 0) throw invalidArgument(field, "must list at least one name");
  return values.map((v, i) => requireName(`${field}[${i}]`, kind, v));
}

/** An enum field: 0 (unset) maps to `fallback`; anything else must be one of `allowed`. */
export function requireEnum<T extends number>(field: string, value: number, allowed: readonly T[], fallback: T | undefined, names: Record<number, string>): T | undefined {
  if (value === 0) return fallback;
  if (!allowed.includes(value as T)) {
    throw invalidArgument(field, `must be one of ${allowed.map((a) => names[a]).join(", ")} (got ${value})`);
  }
  return value as T;
}
