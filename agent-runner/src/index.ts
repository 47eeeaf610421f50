// @dstack/agent-runner — see ../shared/DESIGN.md for what lands here.
export {};
