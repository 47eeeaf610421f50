// The `.dstack.yml` configuration schema: parsing, the value grammar, normalized types and
// conversion to and from the protobuf messages.
export * from "./types.js";
export * from "./errors.js";
export * from "./grammar.js";
export { parseConfiguration } from "./parse.js";
export {
  CONFIGURATION_TYPES,
  configurationSchemas,
  taskSchema,
  serviceSchema,
  devEnvironmentSchema,
  fleetSchema,
  volumeSchema,
  gatewaySchema,
  resourcesSchema,
  defaultResources,
  DEFAULT_RESOURCES,
} from "./schema.js";
export { toProtoConfiguration, fromProtoConfiguration, toProtoResources, fromProtoResources } from "./convert.js";
export { collectSecretReferences } from "./secrets.js";
