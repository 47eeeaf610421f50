// SecretService → services.secrets. Values go in, never come back out through the API.
import type { ServiceImpl } from "@connectrpc/connect";
import type { SecretService } from "@dstack/proto/api";
import { caller } from "./context.js";
import { secretMessage } from "./convert.js";
import type { HandlerDeps } from "./deps.js";
import { requireName, requireNames } from "./validate.js";

export function secretHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof SecretService>> {
  const { secrets } = services;
  const project = (v: string) => requireName("project_name", "project", v);
  return {
    listSecrets: async (req, ctx) => ({ secrets: (await secrets.list(caller(ctx), project(req.projectName))).map(secretMessage) }),

    getSecret: async (req, ctx) => ({
      secret: secretMessage(await secrets.get(caller(ctx), project(req.projectName), requireName("name", "secret", req.name))),
    }),

    createOrUpdateSecret: async (req, ctx) => ({
      secret: secretMessage(await secrets.createOrUpdate(caller(ctx), project(req.projectName), requireName("name", "secret", req.name), req.value)),
    }),

    deleteSecrets: async (req, ctx) => {
      await secrets.delete(caller(ctx), project(req.projectName), requireNames("names", "secret", req.names));
      return {};
    },
  };
}
