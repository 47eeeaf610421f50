// The runner's version, reported in its state report and by `--version`.
export const RUNNER_VERSION = "0.1.0";
