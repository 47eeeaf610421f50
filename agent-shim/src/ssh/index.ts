// The shim's embedded SSH server: see server.ts.
export { createShimSshServer, SSH_SERVER_DEFAULTS } from "./server.js";
export { authorizedKeyMatches, fingerprintOf, parsePublicKey, publicKeyFromBlob, type SshPublicKey } from "./keys.js";
export { loadOrCreateHostKey, HostKeyError, type HostKey } from "./host-key.js";
export { SSH_SERVER_ALGORITHMS, CLIENT_SIGNATURE_ALGORITHMS, MIN_RSA_BITS } from "./algorithms.js";
export type {
  ConnectionContext,
  JumpHostPolicy,
  LoginRequest,
  LoginTarget,
  ShimSshLogger,
  ShimSshServer,
  ShimSshServerOptions,
} from "./types.js";
