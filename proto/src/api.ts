// Every generated message, enum and service of dstack.api.v1 (proto/gen is never edited by hand).
export * from "../gen/dstack/api/v1/backend_pb.js";
export * from "../gen/dstack/api/v1/common_pb.js";
export * from "../gen/dstack/api/v1/configuration_pb.js";
export * from "../gen/dstack/api/v1/fleet_pb.js";
export * from "../gen/dstack/api/v1/gateway_pb.js";
export * from "../gen/dstack/api/v1/instance_pb.js";
export * from "../gen/dstack/api/v1/log_pb.js";
export * from "../gen/dstack/api/v1/metrics_pb.js";
export * from "../gen/dstack/api/v1/offer_pb.js";
export * from "../gen/dstack/api/v1/project_pb.js";
export * from "../gen/dstack/api/v1/run_pb.js";
export * from "../gen/dstack/api/v1/run_service_pb.js";
export * from "../gen/dstack/api/v1/secret_pb.js";
export * from "../gen/dstack/api/v1/server_pb.js";
export * from "../gen/dstack/api/v1/tunnel_pb.js";
export * from "../gen/dstack/api/v1/user_pb.js";
export * from "../gen/dstack/api/v1/volume_pb.js";
