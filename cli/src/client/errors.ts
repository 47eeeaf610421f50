// Every failure the client library reports is a DstackError: a short kind a program can branch
// on, the server's catalogue code when the server sent one (x-dstack-error), and a message a
// person can act on. Transport details (stacks, socket errors) are turned into sentences here.
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * What went wrong, in a word:
 * - Connect status names in snake_case (`not_found`, `unauthenticated`, `permission_denied`,
 *   `invalid_argument`, `already_exists`, `failed_precondition`, `resource_exhausted`,
 *   `aborted`, `unavailable`, `unimplemented`, `internal`, `deadline_exceeded`, `canceled`, …);
 * - `config`: no usable project/server/token in the config file or environment;
 * - `usage`: the caller passed something invalid before anything was sent;
 * - `code_too_large`: the code archive is above the server's upload limit.
 */
export type DstackErrorKind = string;

export class DstackError extends Error {
  override readonly name = "DstackError";
  constructor(
    readonly kind: DstackErrorKind,
    message: string,
    readonly details: { serverCode?: string; status?: Code; cause?: unknown } = {},
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
  }

  /** The server's catalogue code, e.g. DSTACK_RUN_NOT_FOUND, when the server sent one. */
  get serverCode(): string | undefined {
    return this.details.serverCode;
  }
}

const snake = (s: string) => s.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

/** Socket-level causes connect-node wraps into Unavailable/Internal errors. */
function networkCause(e: unknown): string | undefined {
  for (let c: unknown = e, i = 0; c && i < 5; c = (c as { cause?: unknown }).cause, i++) {
    const code = (c as NodeJS.ErrnoException).code;
    if (typeof code === "string" && /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE)$/.test(code)) return code;
  }
  return undefined;
}

const NETWORK_WORDS: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EPIPE: "connection closed",
};

/** Turns anything a Connect call threw into a DstackError; `serverUrl` names the server in network errors. */
export function toDstackError(e: unknown, serverUrl: string, rpc?: string): DstackError {
  if (e instanceof DstackError) return e;
  const net = networkCause(e);
  if (net) {
    return new DstackError("unavailable", `Cannot reach the dstack server at ${serverUrl} (${NETWORK_WORDS[net] ?? net}). Is it running? Start one with \`dstack server\`, or fix the URL with \`dstack project add\`.`, {
      status: Code.Unavailable,
      cause: e,
    });
  }
  if (e instanceof ConnectError || (e instanceof Error && e.name === "ConnectError")) {
    const ce = ConnectError.from(e);
    const serverCode = ce.metadata.get("x-dstack-error") ?? undefined;
    const kind = snake(Code[ce.code] ?? "unknown");
    let message = ce.rawMessage;
    if (ce.code === Code.Unimplemented) {
      message = `The server at ${serverUrl} does not support ${rpc ?? "this call"} yet (${ce.rawMessage}).`;
    } else if (ce.code === Code.Unavailable && !serverCode) {
      message = `The dstack server at ${serverUrl} is unavailable: ${ce.rawMessage}`;
    } else if (ce.code === Code.Unauthenticated && !serverCode && !message) {
      message = "Invalid or missing token.";
    }
    return new DstackError(kind, message, { ...(serverCode ? { serverCode } : {}), status: ce.code, cause: e });
  }
  if (e instanceof Error && e.name === "AbortError") return new DstackError("canceled", "The call was canceled.", { status: Code.Canceled, cause: e });
  return new DstackError("internal", e instanceof Error ? e.message : String(e), { status: Code.Internal, cause: e });
}

export function isNotFound(e: unknown): boolean {
  return e instanceof DstackError && e.kind === "not_found";
}
