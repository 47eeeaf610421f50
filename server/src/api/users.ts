// UserService → services.users (users, tokens and the caller's SSH public keys).
import type { ServiceImpl } from "@connectrpc/connect";
import { GlobalRole, type UserService } from "@dstack/proto/api";
import { caller } from "./context.js";
import { publicKeyMessage, userMessage } from "./convert.js";
import type { HandlerDeps } from "./deps.js";
import { requireEnum, requireName, requireNames } from "./validate.js";

const ROLES = [GlobalRole.ADMIN, GlobalRole.USER] as const;

export function userHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof UserService>> {
  const { users } = services;
  return {
    getMyUser: async (_req, ctx) => ({ user: userMessage(caller(ctx)) }),

    listUsers: async (req, ctx) => {
      const page = await users.listPage(caller(ctx), { limit: req.limit, pageToken: req.pageToken });
      return { users: page.items.map(userMessage), nextPageToken: page.nextPageToken };
    },

    getUser: async (req, ctx) => ({ user: userMessage(await users.get(caller(ctx), requireName("username", "user", req.username))) }),

    createUser: async (req, ctx) => {
      const { user, token } = await users.create(caller(ctx), {
        name: requireName("username", "user", req.username),
        globalRole: requireEnum("global_role", req.globalRole, ROLES, GlobalRole.USER, GlobalRole),
        email: req.email === "" ? null : req.email,
        active: req.active,
      });
      return { user: { user: userMessage(user), token } };
    },

    updateUser: async (req, ctx) => {
      const user = await users.update(caller(ctx), requireName("username", "user", req.username), {
        globalRole: requireEnum("global_role", req.globalRole, ROLES, undefined, GlobalRole),
        email: req.email === undefined ? undefined : req.email === "" ? null : req.email,
        active: req.active,
      });
      return { user: userMessage(user) };
    },

    deleteUsers: async (req, ctx) => {
      await users.delete(caller(ctx), requireNames("usernames", "user", req.usernames));
      return {};
    },

    refreshToken: async (req, ctx) => {
      const me = caller(ctx);
      const name = req.username === "" ? me.name : requireName("username", "user", req.username);
      const token = await users.refreshToken(me, name);
      return { user: { user: userMessage(await users.get(me, name)), token } };
    },

    addPublicKey: async (req, ctx) => ({ publicKey: publicKeyMessage(await users.addPublicKey(caller(ctx), { key: req.key, name: req.name })) }),

    listPublicKeys: async (_req, ctx) => ({ publicKeys: (await users.listPublicKeys(caller(ctx))).map(publicKeyMessage) }),

    deletePublicKeys: async (req, ctx) => {
      await users.deletePublicKeys(caller(ctx), req.ids);
      return {};
    },
  };
}
