// The server side that drives the agents: the dispatcher (scheduler ↔ mesh) and the embedded local fleet.
export { Dispatcher, createDispatcher, type DispatcherOptions, type AgentLogger } from "./dispatcher.js";
export { startLocalFleet, dockerAnswers, DEFAULT_SHIM_BIN, type LocalFleet, type LocalFleetOptions } from "./local-fleet.js";
export { toHostInfo, describeHost } from "./host-info.js";
export { submitTaskCommand, submitJobCommand, containerName, splitWords, interpolateSecrets } from "./commands.js";
