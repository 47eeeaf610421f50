// @dstack/agent-runner: the in-container agent. `main` is the CLI; the rest is for tests and tools.
export { main, parseArgs, DEFAULT_HOME } from "./main.js";
export { Runner, RUNNER_DEFAULTS, type RunnerOptions } from "./runner.js";
export { readBootstrap, BOOTSTRAP_ENV, type Bootstrap, type BootstrapFile } from "./bootstrap.js";
export { LogPusher, LOG_PUSHER_DEFAULTS, type LogPusherOptions } from "./logs/pusher.js";
export { collectMetrics } from "./metrics/index.js";
export { RUNNER_VERSION } from "./version.js";
