// The authenticated caller travels from the auth interceptor to the handlers in Connect's
// context values, never in a header a client could forge.
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import type { UserView } from "../services/index.js";

export const kCaller = createContextKey<UserView | undefined>(undefined, { description: "dstack authenticated user" });

/** The caller of an authenticated RPC. */
export function caller(ctx: HandlerContext): UserView {
  const user = ctx.values.get(kCaller);
  // Only reachable if a method is listed as public in interceptors.ts but reads the caller.
  if (!user) throw new ConnectError("this call needs an Authorization: Bearer <token> header", Code.Unauthenticated);
  return user;
}
