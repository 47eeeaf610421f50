// Who may do what, as in dstack (security/permissions.py): global admins pass every check;
// inside a project the roles rank admin > manager > user. These are pure functions;
// services load the project and membership and call them.
import { GlobalRole, ProjectRole } from "../domain/enums.js";

/**
 * - `admin`: project admin.
 * - `manager`: project admin or manager.
 * - `member`: any project role.
 * - `member-or-public`: any member, or any authenticated user when the project is public.
 * - `manager-or-public`: managers, or anyone joining a public project (self-join).
 * - `manager-or-self`: managers, or a member acting on their own membership (leaving).
 */
export type AccessLevel = "admin" | "manager" | "member" | "member-or-public" | "manager-or-public" | "manager-or-self";

/** Project-scoped operations and the access each needs; the API layer names these. */
export const PROJECT_OPERATIONS = {
  "project.get": "member-or-public",
  "project.update": "admin",
  "project.delete": "admin",
  "members.set": "manager",
  "members.add": "manager-or-public",
  "members.remove": "manager-or-self",
  "backends.manage": "admin",
  "secrets.manage": "manager",
  "runs.list": "member",
  "runs.apply": "member",
  "runs.stop": "member",
  "fleets.apply": "member",
  "fleets.delete": "member",
  "fleets.join-token": "manager",
  "volumes.apply": "member",
  "gateways.list": "member-or-public",
  "gateways.manage": "admin",
} as const satisfies Record<string, AccessLevel>;

export type ProjectOperation = keyof typeof PROJECT_OPERATIONS;

const RANK: Record<ProjectRole, number> = {
  [ProjectRole.UNSPECIFIED]: 0,
  [ProjectRole.USER]: 1,
  [ProjectRole.MANAGER]: 2,
  [ProjectRole.ADMIN]: 3,
};

export interface AccessSubject {
  globalRole: GlobalRole;
  /** The user's role in the project; null when not a member. */
  projectRole: ProjectRole | null;
  /** For `manager-or-self`: true when every membership acted on is the user's own. */
  actsOnSelfOnly?: boolean;
}

export function hasProjectAccess(subject: AccessSubject, project: { isPublic: boolean }, level: AccessLevel): boolean {
  if (subject.globalRole === GlobalRole.ADMIN) return true;
  const rank = subject.projectRole === null ? 0 : RANK[subject.projectRole];
  switch (level) {
    case "admin":
      return rank >= RANK[ProjectRole.ADMIN];
    case "manager":
      return rank >= RANK[ProjectRole.MANAGER];
    case "member":
      return rank >= RANK[ProjectRole.USER];
    case "member-or-public":
      return rank >= RANK[ProjectRole.USER] || project.isPublic;
    case "manager-or-public":
      return rank >= RANK[ProjectRole.MANAGER] || project.isPublic;
    case "manager-or-self":
      return rank >= RANK[ProjectRole.MANAGER] || (rank >= RANK[ProjectRole.USER] && subject.actsOnSelfOnly === true);
  }
}

/** Human wording for PermissionDenied messages. */
export function describeLevel(level: AccessLevel, project: string): string {
  switch (level) {
    case "admin":
      return `the admin role in project '${project}'`;
    case "manager":
      return `the manager or admin role in project '${project}'`;
    case "member":
    case "member-or-public":
      return `membership in project '${project}'`;
    case "manager-or-public":
      return `the manager role in project '${project}' (or a public project)`;
    case "manager-or-self":
      return `the manager role in project '${project}' (members may only remove themselves)`;
  }
}

export function isGlobalAdmin(user: { globalRole: GlobalRole }): boolean {
  return user.globalRole === GlobalRole.ADMIN;
}
