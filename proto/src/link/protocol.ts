// Types shared by both ends of a link: which commands each agent kind takes, the reply each
// command gets, identities as certificates name them, and LinkError ↔ Connect code mapping.
import { Code, ConnectError } from "@connectrpc/connect";
import { LinkErrorCode, type LinkError, type RunnerCommand, type RunnerEvent, type RunnerReply, type ShimCommand, type ShimEvent, type ShimReply } from "../agent.js";

export type AgentKindName = "shim" | "runner";

type Cases<U> = Exclude<U, { case: undefined }>;

export interface KindTypes {
  shim: { command: Cases<ShimCommand["command"]>; reply: Cases<ShimReply["result"]>; event: Cases<ShimEvent["event"]> };
  runner: { command: Cases<RunnerCommand["command"]>; reply: Cases<RunnerReply["result"]>; event: Cases<RunnerEvent["event"]> };
}

/** A command of kind K, e.g. `{ case: "ping", value: create(PingCommandSchema) }`. */
export type CommandOf<K extends AgentKindName> = KindTypes[K]["command"];
export type CommandCase<K extends AgentKindName> = CommandOf<K>["case"];
/** The successful result for command case C. */
export type ResultOf<K extends AgentKindName, C extends CommandCase<K>> = Extract<KindTypes[K]["reply"], { case: C }>["value"];
export type ReplyResultOf<K extends AgentKindName> = KindTypes[K]["reply"];
export type EventOf<K extends AgentKindName> = KindTypes[K]["event"];

/** The URI SAN that names an agent in its certificate: `spiffe://dstack/<kind>/<id>`. */
export function identityUri(kind: AgentKindName, id: string): string {
  return `spiffe://dstack/${kind}/${id}`;
}

export function parseIdentityUri(uri: string): { kind: AgentKindName; id: string } | null {
  const m = /^spiffe:\/\/dstack\/(shim|runner)\/([A-Za-z0-9-]+)$/.exec(uri);
  return m ? { kind: m[1] as AgentKindName, id: m[2]! } : null;
}

const TO_CONNECT: Record<LinkErrorCode, Code> = {
  [LinkErrorCode.UNSPECIFIED]: Code.Unknown,
  [LinkErrorCode.INVALID_ARGUMENT]: Code.InvalidArgument,
  [LinkErrorCode.NOT_FOUND]: Code.NotFound,
  [LinkErrorCode.ALREADY_EXISTS]: Code.AlreadyExists,
  [LinkErrorCode.FAILED_PRECONDITION]: Code.FailedPrecondition,
  [LinkErrorCode.DEADLINE_EXCEEDED]: Code.DeadlineExceeded,
  [LinkErrorCode.CANCELLED]: Code.Canceled,
  [LinkErrorCode.UNAVAILABLE]: Code.Unavailable,
  [LinkErrorCode.RESOURCE_EXHAUSTED]: Code.ResourceExhausted,
  [LinkErrorCode.UNIMPLEMENTED]: Code.Unimplemented,
  [LinkErrorCode.INTERNAL]: Code.Internal,
  [LinkErrorCode.PERMISSION_DENIED]: Code.PermissionDenied,
};

/** A reverse call that failed: the agent's LinkError, or a deadline/cancellation on the server. */
export class LinkCallError extends ConnectError {
  constructor(
    message: string,
    readonly linkCode: LinkErrorCode,
    readonly retryable = false,
    readonly linkDetails: Record<string, string> = {},
  ) {
    super(message, TO_CONNECT[linkCode] ?? Code.Unknown);
  }
  static fromLinkError(e: LinkError): LinkCallError {
    return new LinkCallError(e.message, e.code, e.retryable, { ...e.details });
  }
}

/** The LinkErrorCode for any thrown value (a LinkCallError keeps its code; others are INTERNAL). */
export function linkErrorCodeOf(e: unknown): LinkErrorCode {
  if (e instanceof LinkCallError) return e.linkCode;
  if (e instanceof ConnectError) {
    const found = (Object.entries(TO_CONNECT) as unknown as [string, Code][]).find(([, c]) => c === e.code);
    if (found) return Number(found[0]) as LinkErrorCode;
  }
  return LinkErrorCode.INTERNAL;
}
