import { describe, expect, it } from "vitest";
import { GlobalRole, ProjectRole } from "../domain/enums.js";
import { PROJECT_OPERATIONS, hasProjectAccess, type AccessLevel } from "./permissions.js";

type Who = "global-admin" | "admin" | "manager" | "user" | "outsider";
const subject = (who: Who, actsOnSelfOnly = false) => ({
  globalRole: who === "global-admin" ? GlobalRole.ADMIN : GlobalRole.USER,
  projectRole: ({ "global-admin": null, admin: ProjectRole.ADMIN, manager: ProjectRole.MANAGER, user: ProjectRole.USER, outsider: null } as const)[who],
  actsOnSelfOnly,
});

// who → access level → [private project, public project]
const MATRIX: Record<Who, Record<AccessLevel, [boolean, boolean]>> = {
  "global-admin": {
    admin: [true, true],
    manager: [true, true],
    member: [true, true],
    "member-or-public": [true, true],
    "manager-or-public": [true, true],
    "manager-or-self": [true, true],
  },
  admin: {
    admin: [true, true],
    manager: [true, true],
    member: [true, true],
    "member-or-public": [true, true],
    "manager-or-public": [true, true],
    "manager-or-self": [true, true],
  },
  manager: {
    admin: [false, false],
    manager: [true, true],
    member: [true, true],
    "member-or-public": [true, true],
    "manager-or-public": [true, true],
    "manager-or-self": [true, true],
  },
  user: {
    admin: [false, false],
    manager: [false, false],
    member: [true, true],
    "member-or-public": [true, true],
    "manager-or-public": [false, true],
    "manager-or-self": [false, false],
  },
  outsider: {
    admin: [false, false],
    manager: [false, false],
    member: [false, false],
    "member-or-public": [false, true],
    "manager-or-public": [false, true],
    "manager-or-self": [false, false],
  },
};

describe("project access matrix", () => {
  const cases = Object.entries(MATRIX).flatMap(([who, levels]) =>
    Object.entries(levels).flatMap(([level, [priv, pub]]) => [
      [who, level, "private", priv] as const,
      [who, level, "public", pub] as const,
    ]),
  );
  it.each(cases)("%s needing %s on a %s project: %s", (who, level, kind, expected) => {
    expect(hasProjectAccess(subject(who as Who), { isPublic: kind === "public" }, level as AccessLevel)).toBe(expected);
  });

  it("a member may act on their own membership only (leave)", () => {
    expect(hasProjectAccess(subject("user", true), { isPublic: false }, "manager-or-self")).toBe(true);
    expect(hasProjectAccess(subject("outsider", true), { isPublic: true }, "manager-or-self")).toBe(false);
  });

  it.each([
    ["secrets.manage", "manager"],
    ["runs.apply", "member"],
    ["project.get", "member-or-public"],
    ["project.delete", "admin"],
    ["members.set", "manager"],
    ["members.add", "manager-or-public"],
    ["members.remove", "manager-or-self"],
    ["backends.manage", "admin"],
  ] as const)("operation %s needs %s", (op, level) => expect(PROJECT_OPERATIONS[op]).toBe(level));
});
