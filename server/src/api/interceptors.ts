// Cross-cutting concerns of every RPC: authentication and error mapping.
import { Code, ConnectError, type Interceptor, type StreamResponse } from "@connectrpc/connect";
import type { FastifyBaseLogger } from "fastify";
import { isDstackError, toConnectError } from "../errors.js";
import type { Services } from "../services/index.js";
import { kCaller } from "./context.js";

/** RPCs anyone may call: a client asks for the server's version before it has a token. */
export const PUBLIC_METHODS: ReadonlySet<string> = new Set(["dstack.api.v1.ServerService/GetServerInfo"]);

const rpcName = (req: { service: { typeName: string }; method: { name: string } }) => `${req.service.typeName}/${req.method.name}`;

/**
 * The error a client sees. DstackErrors carry their catalogue status and message; a
 * ConnectError (validation) passes as is; anything else is a bug: logged with its stack and
 * answered with a generic Internal, so SQL, paths and stacks never reach the client.
 */
export function toApiError(e: unknown, rpc: string, log: FastifyBaseLogger): ConnectError {
  if (isDstackError(e)) return toConnectError(e);
  if (e instanceof ConnectError) return e;
  log.error({ err: e, rpc }, "unexpected error in RPC handler");
  return new ConnectError(`internal server error in ${rpc}; the server log has the details`, Code.Internal);
}

/**
 * Authenticates (`Authorization: Bearer <token>` → user in the context values) and maps errors
 * of the call and, for server streams, of every message.
 */
export function apiInterceptor(services: Services, log: FastifyBaseLogger): Interceptor {
  return (next) => async (req) => {
    const rpc = rpcName(req);
    let res;
    try {
      if (!PUBLIC_METHODS.has(rpc)) req.contextValues.set(kCaller, await services.users.authenticate(req.header.get("authorization")));
      res = await next(req);
    } catch (e) {
      throw toApiError(e, rpc, log);
    }
    if (!res.stream) return res;
    const source = res.message;
    async function* mapped() {
      try {
        yield* source;
      } catch (e) {
        throw toApiError(e, rpc, log);
      }
    }
    return { ...res, message: mapped() } as StreamResponse;
  };
}
