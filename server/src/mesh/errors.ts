// Mesh errors as data: each has a stable code, the Connect status an agent sees, and a message
// that says what to do. Kept beside the mesh so the shared catalogue stays with its owners.
import { Code, ConnectError } from "@connectrpc/connect";

export const MESH_ERRORS = {
  MESH_TOKEN_UNKNOWN: { code: Code.Unauthenticated, message: "Join token not recognised. Create a new one with `dstack fleet join-token FLEET`." },
  MESH_TOKEN_EXPIRED: { code: Code.Unauthenticated, message: "Join token expired at {expiresAt}. Create a new one with `dstack fleet join-token FLEET`." },
  MESH_TOKEN_REVOKED: { code: Code.Unauthenticated, message: "Join token was revoked. Create a new one with `dstack fleet join-token FLEET`." },
  MESH_TOKEN_USED: { code: Code.Unauthenticated, message: "Join token was already used at {usedAt}; one-time tokens enroll a single agent. Create a new one, or a reusable one for many hosts." },
  MESH_TOKEN_USED_UP: { code: Code.Unauthenticated, message: "Join token is used up: it allowed {maxUses} enrollment(s), the last at {usedAt}. Create a new one with `dstack fleet join-token FLEET --max-uses N`." },
  MESH_TOKEN_KIND: { code: Code.PermissionDenied, message: "Join token is for a {expected}, but a {actual} tried to enroll with it." },
  MESH_BAD_CSR: { code: Code.InvalidArgument, message: "{reason}. Send a PEM PKCS#10 request signed by an ECDSA P-256 or Ed25519 key." },
  MESH_NO_CLIENT_CERT: { code: Code.Unauthenticated, message: "This call needs a client certificate; enroll first with a join token." },
  MESH_BAD_CLIENT_CERT: { code: Code.Unauthenticated, message: "Client certificate rejected ({reason}). Enroll again with a new join token." },
  MESH_REVOKED: { code: Code.PermissionDenied, message: "Agent {kind}/{id} is revoked. Enroll it again with a new join token." },
  MESH_WRONG_SERVICE: { code: Code.PermissionDenied, message: "A {kind} certificate cannot open the {service} link." },
  MESH_SPOOFED: { code: Code.PermissionDenied, message: "{kind} {id} may not report {what}: it belongs to another agent." },
  MESH_PROTOCOL: { code: Code.InvalidArgument, message: "Link protocol error: {reason}" },
  MESH_REPLACED: { code: Code.Aborted, message: "A newer connection of {kind} {id} replaced this one." },
  MESH_NOT_FOUND: { code: Code.NotFound, message: "{what} '{id}' does not exist." },
  // The data plane (logs.ts, code.ts).
  MESH_DATA_UNAVAILABLE: { code: Code.Unimplemented, message: "This server does not serve {service} on its agent port (started without data hooks)." },
  MESH_LOG_GAP: { code: Code.OutOfRange, message: "Log batch of job {job} starts at sequence {first}, but the server has stored only its first {next} entries; re-send from sequence {next}." },
  MESH_BLOB_NOT_FOUND: { code: Code.NotFound, message: "Blob {sha256} is not available to job {job}: it was never uploaded to the job's project, or the job's run does not use it." },
  MESH_BLOB_OFFSET: { code: Code.OutOfRange, message: "Offset {offset} is beyond the end of blob {sha256} ({size} bytes); resume from at most {size}." },
  // Tunnels (tunnels.ts).
  MESH_AGENT_OFFLINE: { code: Code.Unavailable, message: "{kind} {id} is not connected to the server, so no tunnel can reach it; check that the agent is running and can reach the agent port." },
  MESH_TUNNEL_TIMEOUT: { code: Code.DeadlineExceeded, message: "{kind} {id} did not open tunnel {tunnel} within {ms} ms; the agent may be overloaded or unable to dial the agent port." },
  MESH_TUNNEL_CANCELED: { code: Code.Canceled, message: "Opening tunnel {tunnel} was cancelled: {reason}" },
  MESH_TUNNEL_UNKNOWN: { code: Code.NotFound, message: "Tunnel {tunnel} is unknown or expired: an agent may dial a tunnel only once, after the server's open_tunnel command and before its deadline." },
  MESH_TUNNEL_FORBIDDEN: { code: Code.PermissionDenied, message: "{kind} {id} may not accept tunnel {tunnel}: the server opened it for another agent." },
} as const;

export type MeshErrorCode = keyof typeof MESH_ERRORS;

export class MeshError extends ConnectError {
  constructor(readonly meshCode: MeshErrorCode, params: Record<string, string | number> = {}) {
    const def = MESH_ERRORS[meshCode];
    super(def.message.replace(/\{(\w+)\}/g, (_, k: string) => String(params[k] ?? `{${k}}`)), def.code);
  }
}

export const meshErr = (code: MeshErrorCode, params?: Record<string, string | number>): MeshError => new MeshError(code, params);
