// @dstack/proto: the contracts shared by every side of dstack-ts.
export {};
