// The server's error catalogue, kept as data (in the spirit of Fastify's error codes):
// every error a user can meet has a stable code, the Connect status it maps to, and a
// message template that says what to do about it. Services throw `DstackError`s; the
// thin API layer turns them into ConnectErrors with `toConnectError`.
import { Code, ConnectError } from "@connectrpc/connect";

export type ConnectCodeName = keyof typeof Code;

interface ErrorDef {
  /** Connect status the API answers with. */
  status: ConnectCodeName;
  /** `{name}` placeholders are filled from the params given at the throw site. */
  message: string;
}

export const ERRORS = {
  // auth
  DSTACK_UNAUTHENTICATED: {
    status: "Unauthenticated",
    message: "Invalid or missing token. Pass a valid user token (dstack config / DSTACK_TOKEN); an admin can issue one with `dstack user refresh-token`.",
  },
  DSTACK_USER_INACTIVE: {
    status: "Unauthenticated",
    message: "User '{user}' is deactivated. Ask a server admin to reactivate the account.",
  },
  DSTACK_PERMISSION_DENIED: {
    status: "PermissionDenied",
    message: "Access denied: {action} requires {required}.",
  },
  // users
  DSTACK_USER_NOT_FOUND: { status: "NotFound", message: "User '{user}' does not exist." },
  DSTACK_USER_EXISTS: { status: "AlreadyExists", message: "User '{user}' already exists; choose another name or update the existing user." },
  DSTACK_INVALID_PUBLIC_KEY: {
    status: "InvalidArgument",
    message: "Invalid {field}: {reason}. Pass one line of an OpenSSH public key file (e.g. ~/.ssh/id_ed25519.pub): ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (2048 bits or more).",
  },
  DSTACK_PUBLIC_KEY_EXISTS: { status: "AlreadyExists", message: "You already added this SSH public key ({fingerprint})." },
  DSTACK_PUBLIC_KEY_NOT_FOUND: { status: "NotFound", message: "SSH public key '{id}' does not exist. List your keys with ListPublicKeys." },
  DSTACK_INVALID_NAME: {
    status: "InvalidArgument",
    message: "Invalid {kind} name '{name}': use 1-{max} characters ({allowed}).",
  },
  DSTACK_LAST_ADMIN: {
    status: "FailedPrecondition",
    message: "Cannot {action} '{user}': it is the last active global admin. Promote another user to admin first.",
  },
  // projects
  DSTACK_PROJECT_NOT_FOUND: {
    status: "NotFound",
    message: "Project '{project}' does not exist or you are not a member of it. List yours with `dstack project list`.",
  },
  DSTACK_PROJECT_EXISTS: { status: "AlreadyExists", message: "Project '{project}' already exists; choose another name." },
  DSTACK_PROJECT_QUOTA: {
    status: "ResourceExhausted",
    message: "User '{user}' already owns {quota} projects, the per-user limit. Delete one or ask an admin to create the project.",
  },
  DSTACK_MEMBER_NOT_FOUND: { status: "NotFound", message: "User '{user}' is not a member of project '{project}'." },
  DSTACK_INVALID_ROLE: { status: "InvalidArgument", message: "Invalid {kind} role '{role}': expected one of {allowed}." },
  // secrets
  DSTACK_SECRET_NOT_FOUND: { status: "NotFound", message: "Secret '{secret}' does not exist in project '{project}'. Set it with `dstack secret set {secret} <value>`." },
  DSTACK_SECRET_DECRYPT_FAILED: {
    status: "Internal",
    message: "Cannot decrypt secret '{secret}' of project '{project}': the server encryption key differs from the one it was stored with. Restore the original DSTACK_SERVER_ENCRYPTION_KEY (or <server dir>/encryption.key), or set the secret again.",
  },
  // fleets, instances, runs
  DSTACK_FLEET_NOT_FOUND: { status: "NotFound", message: "Fleet '{fleet}' does not exist in project '{project}'. List fleets with `dstack fleet`." },
  DSTACK_FLEET_IN_USE: {
    status: "FailedPrecondition",
    message: "Fleet '{fleet}' has {jobs} active job(s). Stop the runs using it (`dstack stop`) before deleting the fleet.",
  },
  DSTACK_INVALID_FLEET_CONFIG: { status: "InvalidArgument", message: "Invalid configuration of fleet '{fleet}': {reason}" },
  DSTACK_BAD_JOIN_TOKEN_REQUEST: { status: "InvalidArgument", message: "Invalid join token request: {reason}." },
  DSTACK_INSTANCE_NOT_FOUND: { status: "NotFound", message: "Instance '{instance}' does not exist in project '{project}'." },
  DSTACK_BAD_HOST_INFO: { status: "InvalidArgument", message: "Invalid host info for instance of fleet '{fleet}': {reason}" },
  DSTACK_RUN_NOT_FOUND: { status: "NotFound", message: "Run '{run}' does not exist in project '{project}'. List runs with `dstack ps -a`." },
  DSTACK_RUN_ACTIVE: {
    status: "FailedPrecondition",
    message: "Run '{run}' is still {status}. Stop it first with `dstack stop {run}`, or apply under another name.",
  },
  DSTACK_RUN_NOT_FINISHED: {
    status: "FailedPrecondition",
    message: "Run '{run}' is {status}; only finished runs can be deleted. Stop it first with `dstack stop {run}`.",
  },
  DSTACK_RUN_CHANGED: {
    status: "Aborted",
    message: "Run '{run}' changed since the plan was made. Run `dstack apply` again to see the new plan.",
  },
  DSTACK_INVALID_RUN_SPEC: { status: "InvalidArgument", message: "Invalid run spec: {reason}" },
  DSTACK_BAD_OFFER_GROUP_BY: { status: "InvalidArgument", message: "Invalid offer grouping: {reason}." },
  DSTACK_BAD_PAGE_TOKEN: { status: "InvalidArgument", message: "Invalid page token; pass the next_page_token of a previous response unchanged." },
  DSTACK_CODE_TOO_LARGE: {
    status: "ResourceExhausted",
    message: "The code blob is {size} bytes, above the server's limit of {limit} bytes. Exclude large files (.gitignore/.dstackignore), or raise DSTACK_SERVER_CODE_UPLOAD_LIMIT.",
  },
  DSTACK_CODE_HASH_MISMATCH: { status: "InvalidArgument", message: "The blob's SHA-256 is {actual}, not the declared {declared}." },
  DSTACK_JOB_NOT_FOUND: { status: "NotFound", message: "Job submission '{job}' does not exist." },
  DSTACK_FILE_ARCHIVE_TOO_LARGE: {
    status: "ResourceExhausted",
    message: "The `files:` archive is {size} bytes, above the server's limit of {limit} bytes. Map less, or raise DSTACK_SERVER_CODE_UPLOAD_LIMIT.",
  },
  DSTACK_FILE_ARCHIVE_INVALID: { status: "InvalidArgument", message: "The `files:` archive {hash} is not a tar or tar.gz archive." },
  DSTACK_FILE_ARCHIVE_NOT_FOUND: {
    status: "FailedPrecondition",
    message: "Run spec `files:` entry for '{path}' names archive {hash}, which project '{project}' does not hold. Upload it first (RunService.UploadFileArchive).",
  },
  // tunnels (ssh, port forwards), metrics: things that reach a running job
  DSTACK_RUN_NOT_RUNNING: {
    status: "FailedPrecondition",
    message: "Run '{run}' is {status}; {need} it running. Check it with `dstack ps`, and wait or re-submit it with `dstack apply`.",
  },
  DSTACK_RUNNER_UNREACHABLE: {
    status: "Unavailable",
    message: "Cannot read metrics of run '{run}': {reason}. Try again in a few seconds; if it persists, check the run with `dstack ps` and `dstack logs`.",
  },
  DSTACK_TUNNEL_FAILED: {
    status: "Unavailable",
    message: "Cannot reach run '{run}' on instance '{instance}': {reason}",
  },
  // the in-server service proxy (/proxy/services/…)
  DSTACK_SERVICE_NOT_FOUND: { status: "NotFound", message: "Service '{run}' does not exist in project '{project}'. List runs with `dstack ps -a`." },
  DSTACK_SERVICE_NO_REPLICA: {
    status: "Unavailable",
    message: "Service '{run}' has no running replica (it is {status}). Check it with `dstack ps`; requests succeed once a replica runs.",
  },
  // state machines
  DSTACK_INVALID_TRANSITION: {
    status: "FailedPrecondition",
    message: "{kind} cannot move from '{from}' to '{to}'.",
  },
  // settings / startup
  DSTACK_BAD_SETTING: { status: "InvalidArgument", message: "Invalid {variable}: {reason}" },
  DSTACK_DATABASE_UNAVAILABLE: { status: "Unavailable", message: "Cannot open the database at {url}: {reason}" },
  DSTACK_NOT_FOUND: { status: "NotFound", message: "{kind} '{name}' does not exist." },
} as const satisfies Record<string, ErrorDef>;

export type ErrorCode = keyof typeof ERRORS;

export class DstackError extends Error {
  override readonly name = "DstackError";
  readonly status: ConnectCodeName;
  constructor(
    readonly code: ErrorCode,
    readonly params: Record<string, string | number> = {},
    options?: { cause?: unknown },
  ) {
    super(formatMessage(ERRORS[code].message, params), options);
    this.status = ERRORS[code].status;
  }
}

function formatMessage(template: string, params: Record<string, string | number>): string {
  return template.replace(/\{(\w+)\}/g, (whole, key: string) => (key in params ? String(params[key]) : whole));
}

/** Shorthand used by services: `throw err("DSTACK_USER_NOT_FOUND", { user })`. */
export function err(code: ErrorCode, params: Record<string, string | number> = {}, cause?: unknown): DstackError {
  return new DstackError(code, params, cause === undefined ? undefined : { cause });
}

export function isDstackError(e: unknown, code?: ErrorCode): e is DstackError {
  return e instanceof DstackError && (code === undefined || e.code === code);
}

/** For the API layer: the ConnectError a client sees, carrying the catalogue code in metadata. */
export function toConnectError(e: DstackError): ConnectError {
  const field = e.params.field;
  const headers: Record<string, string> = { "x-dstack-error": e.code };
  // Catalogue errors about one request field name it the way the API edge's checks do.
  if (e.status === "InvalidArgument" && typeof field === "string") headers["x-dstack-field"] = field;
  return new ConnectError(e.message, Code[e.status], headers, undefined, e);
}
