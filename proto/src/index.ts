// @dstack/proto: the contracts shared by every side of dstack-ts.
// The configuration schema (the `.dstack.yml` syntax) lives here; the generated protobuf
// messages and services are exported by the `@dstack/proto/api` and `@dstack/proto/agent` subpaths.
export * from "./config/index.js";
