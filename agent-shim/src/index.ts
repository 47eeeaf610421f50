// @dstack/agent-shim — see ../shared/DESIGN.md for what lands here.
export * from "./host/index.js";
