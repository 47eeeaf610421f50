// @dstack/server — see ../shared/DESIGN.md for what lands here.
export {};
