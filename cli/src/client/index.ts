// The high-level TypeScript API of dstack: `import { Client } from "@dstack/cli"`.
export {
  Client,
  RunsApi,
  FleetsApi,
  SecretsApi,
  ProjectsApi,
  OffersApi,
  ServerApi,
  UsersApi,
  VolumesApi,
  GatewaysApi,
  isRunFinished,
  isJobFinished,
  isTransientError,
  latestSubmission,
  type ClientOptions,
  type RunInput,
  type LogsOptions,
  type UploadedCode,
} from "./client.js";
export { DstackError, toDstackError, isNotFound, type DstackErrorKind } from "./errors.js";
export { resolveConfig, configPath, readProjects, upsertProject, setDefaultProject, removeProject, type ProjectConfig, type ResolveOptions, type ResolvedConfig } from "./config.js";
export { buildCodeArchive, listCodeFiles, localRepoId, formatBytes, type CodeArchive, type CodeFile } from "./code.js";
export { followLogs, parseSince, abortableSleep, type LogEntry, type LogBatch, type LogSource, type LogStreamName, type FollowOptions } from "./logs.js";
