// ProjectService → services.projects (projects and their members).
import type { ServiceImpl } from "@connectrpc/connect";
import { ProjectRole, type MemberSetting, type ProjectService } from "@dstack/proto/api";
import type { MemberInput } from "../services/projects.js";
import { caller } from "./context.js";
import { projectMessage } from "./convert.js";
import type { HandlerDeps } from "./deps.js";
import { requireEnum, requireName, requireNames } from "./validate.js";

const ROLES = [ProjectRole.ADMIN, ProjectRole.MANAGER, ProjectRole.USER] as const;

function members(field: string, list: MemberSetting[]): MemberInput[] {
  return list.map((m, i) => ({
    userName: requireName(`${field}[${i}].username`, "user", m.username),
    projectRole: requireEnum(`${field}[${i}].project_role`, m.projectRole, ROLES, ProjectRole.USER, ProjectRole) ?? ProjectRole.USER,
  }));
}

export function projectHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof ProjectService>> {
  const { projects } = services;
  const name = (v: string) => requireName("project_name", "project", v);
  return {
    listProjects: async (req, ctx) => {
      const page = await projects.listPage(caller(ctx), { limit: req.limit, pageToken: req.pageToken });
      return { projects: page.items.map(projectMessage), nextPageToken: page.nextPageToken };
    },

    getProject: async (req, ctx) => ({ project: projectMessage(await projects.get(caller(ctx), name(req.projectName))) }),

    createProject: async (req, ctx) => ({
      project: projectMessage(await projects.create(caller(ctx), name(req.projectName), { isPublic: req.isPublic })),
    }),

    deleteProjects: async (req, ctx) => {
      await projects.delete(caller(ctx), requireNames("project_names", "project", req.projectNames));
      return {};
    },

    setProjectMembers: async (req, ctx) => ({
      project: projectMessage(await projects.setMembers(caller(ctx), name(req.projectName), members("members", req.members))),
    }),

    addProjectMembers: async (req, ctx) => ({
      project: projectMessage(await projects.addMembers(caller(ctx), name(req.projectName), members("members", req.members))),
    }),

    removeProjectMembers: async (req, ctx) => ({
      project: projectMessage(await projects.removeMembers(caller(ctx), name(req.projectName), requireNames("usernames", "user", req.usernames))),
    }),

    updateProject: async (req, ctx) => ({
      project: projectMessage(await projects.update(caller(ctx), name(req.projectName), { isPublic: req.isPublic })),
    }),
  };
}
