// Docker task execution: the executor, its pieces and recovery from container labels.
export { TaskExecutor, type TaskLoginTarget, discoverExecutorGpus, taskUpdatedAt, DEFAULT_PULL_TIMEOUT_MS } from "./executor.js";
export type { TaskExecutorOptions, TerminateOptions } from "./executor.js";
export { GpuLocks } from "./gpu-locks.js";
export type { ExecutorGpu, GpuVendorName } from "./gpu-locks.js";
export { containerSpec, isBridge, NVIDIA_CAPABILITIES } from "./container-spec.js";
export type { SpecInputs } from "./container-spec.js";
export { imageTag, imageRegistry, mustPull, pullImage, PullTracker, PullError } from "./image.js";
export type { PullOptions, PullProgressState } from "./image.js";
export { LABEL_INSTANCE, LABEL_TASK, LABEL_RECORD, parseRecord, taskLabels } from "./labels.js";
export type { RecoveryRecord } from "./labels.js";
export { demuxDockerStream, lastLogLines } from "./logs.js";
export { RUNNER_ENTRYPOINT, RUNNER_MOUNT, TASK_MOUNT, agentUrlForContainer, checkRunnerBundle, defaultRunnerBundleDir, numericUser, writeTaskDir } from "./runner-bundle.js";
export type { RunnerBootstrapFile } from "./runner-bundle.js";
