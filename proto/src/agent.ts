// Every generated message, enum and service of dstack.agent.v1 (proto/gen is never edited by hand).
export * from "../gen/dstack/agent/v1/code_pb.js";
export * from "../gen/dstack/agent/v1/enrollment_pb.js";
export * from "../gen/dstack/agent/v1/host_pb.js";
export * from "../gen/dstack/agent/v1/link_pb.js";
export * from "../gen/dstack/agent/v1/log_pb.js";
export * from "../gen/dstack/agent/v1/runner_link_pb.js";
export * from "../gen/dstack/agent/v1/shim_link_pb.js";
export * from "../gen/dstack/agent/v1/tunnel_pb.js";
