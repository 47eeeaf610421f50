// @dstack/proto/link — the agent side of the mesh, shared by dstack-shim and dstack-runner
// (and the X.509 helpers the server's CA uses).
export { enroll, renewCertificate, fetchPinnedCa, agentTransport, AGENT_PORT_WINDOWS, WideWindowSessionManager, EnrollError, type EnrollOptions } from "./enroll.js";
export { connectLink, backoffDelay, type ConnectLinkOptions, type LinkClient, type LinkClientEvents, type CommandHandlers, type CommandContext, type BackoffOptions } from "./client.js";
export { IdentityStore, type StoredIdentity } from "./identity.js";
export { AsyncQueue } from "./queue.js";
export * from "./protocol.js";
export { generateKey, createCsr, parseCsr, issueCertificate, certificateFingerprint, normalizeFingerprint, splitPem, type KeyPair, type IssueOptions, type DistinguishedName } from "./x509.js";
export { acceptTunnel, serveTunnelToTcp, spliceStreams, tunnelRequest, TunnelDuplex, TunnelError, TUNNEL_FRAME_BYTES, type AcceptTunnelOptions, type TunnelDuplexOptions, type TunnelFrame } from "./tunnel.js";
export type { RunnerBootstrapFile } from "./bootstrap-file.js";
export { shimSystemdUnit, systemdWord, type ShimUnitOptions } from "./systemd-unit.js";
