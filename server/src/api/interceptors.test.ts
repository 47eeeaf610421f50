import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { ServerService, UserService } from "@dstack/proto/api";
import { describe, expect, it, vi } from "vitest";
import { err } from "../errors.js";
import type { Services, UserView } from "../services/index.js";
import { GlobalRole } from "../domain/enums.js";
import { caller } from "./context.js";
import { apiInterceptor } from "./interceptors.js";

const alice: UserView = { id: "u1", name: "alice", globalRole: GlobalRole.USER, email: null, active: true, sshPublicKey: null, createdAt: new Date() };
const services = {
  users: {
    authenticate: async (h: string | null) => {
      if (h === "Bearer good") return alice;
      throw err("DSTACK_UNAUTHENTICATED");
    },
  },
} as unknown as Services;

function setup(getUser: () => Promise<unknown>) {
  const log = { error: vi.fn() };
  const transport = createRouterTransport(
    (router) => {
      router.service(ServerService, { getServerInfo: () => ({ serverVersion: "x" }) });
      router.service(UserService, {
        getMyUser: async (_req, ctx) => ({ user: { username: caller(ctx).name } }),
        getUser: async () => (await getUser()) as never,
      });
    },
    { router: { interceptors: [apiInterceptor(services, log as never)] } },
  );
  return { log, users: createClient(UserService, transport), server: createClient(ServerService, transport) };
}

const fail = async (p: Promise<unknown>) => p.then(() => { throw new Error("expected failure"); }, (e) => ConnectError.from(e));

describe("API interceptor", () => {
  it("lets GetServerInfo through without a token and puts the caller in the context otherwise", async () => {
    const { users, server } = setup(async () => ({}));
    expect((await server.getServerInfo({})).serverVersion).toBe("x");
    expect((await users.getMyUser({}, { headers: { authorization: "Bearer good" } })).user?.username).toBe("alice");
    expect((await fail(users.getMyUser({}))).code).toBe(Code.Unauthenticated);
  });

  it("maps DstackErrors to their catalogue status, message and code header", async () => {
    const { users } = setup(async () => {
      throw err("DSTACK_USER_NOT_FOUND", { user: "bob" });
    });
    const e = await fail(users.getUser({ username: "bob" }, { headers: { authorization: "Bearer good" } }));
    expect(e.code).toBe(Code.NotFound);
    expect(e.rawMessage).toBe("User 'bob' does not exist.");
    expect(e.metadata.get("x-dstack-error")).toBe("DSTACK_USER_NOT_FOUND");
  });

  it("answers unexpected errors with a generic Internal and logs the stack, never leaking it", async () => {
    const { users, log } = setup(async () => {
      throw new Error("SQLITE_ERROR: no such table: secret_values at /srv/db.ts:42");
    });
    const e = await fail(users.getUser({ username: "bob" }, { headers: { authorization: "Bearer good" } }));
    expect(e.code).toBe(Code.Internal);
    expect(e.rawMessage).not.toMatch(/SQLITE|secret_values|db\.ts/);
    expect(log.error).toHaveBeenCalledOnce();
    expect(log.error.mock.calls[0]![0].err.message).toContain("SQLITE_ERROR");
  });
});
