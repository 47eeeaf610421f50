// Start-up and shutdown of the real `dstack-server` process, on SQLite and PostgreSQL: the
// banner in dstack's wording, the CLI config, restarts, a preset admin token, SIGTERM.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { UserService } from "@dstack/proto/api";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { DIALECTS, createServerEnv, startServer } from "../helpers/server.js";

const portClosed = (port: number) =>
  new Promise<boolean>((ok) => {
    const s = connect(port, "127.0.0.1");
    s.once("connect", () => (s.destroy(), ok(false)));
    s.once("error", () => ok(true));
  });

describe.each(DIALECTS)("dstack-server start-up on %s", (dialect) => {
  it("prints the token and URL, writes the CLI config, keeps the token across restarts, exits 0 on SIGTERM", async () => {
    const where = await createServerEnv(dialect);
    try {
      // Another project in the CLI config must survive.
      mkdirSync(join(where.home, ".dstack"), { recursive: true });
      writeFileSync(join(where.home, ".dstack", "config.yml"), "projects:\n- name: prod\n  url: https://dstack.example.com/\n  token: p\n  default: true\n");

      const first = await startServer(where);
      expect(first.stdout()).toContain(`The admin token is "${first.adminToken}"`);
      expect(first.stdout()).toContain(`The server is running at http://127.0.0.1:${first.port}/`);
      expect(first.adminToken).toMatch(/^[0-9a-f]{64}$/);
      const config = parse(readFileSync(join(where.home, ".dstack", "config.yml"), "utf8"));
      expect(config.projects).toEqual([
        { name: "prod", url: "https://dstack.example.com/" , token: "p" },
        { name: "main", url: `http://127.0.0.1:${first.port}/`, token: first.adminToken, default: true },
      ]);
      const me = await createClient(UserService, createGrpcTransport({ baseUrl: first.url })).getMyUser({}, { headers: { authorization: `Bearer ${first.adminToken}` } });
      expect(me.user?.username).toBe("admin");

      expect(await first.stop("SIGTERM")).toBe(0);
      expect(await portClosed(first.port)).toBe(true);

      const second = await startServer(where);
      expect(second.adminToken).toBe(first.adminToken);
      expect(await second.stop("SIGINT")).toBe(0);
    } finally {
      await where.cleanup();
    }
  });

  it("honours a preset DSTACK_SERVER_ADMIN_TOKEN and prints it", async () => {
    const where = await createServerEnv(dialect);
    try {
      const preset = "preset-admin-token-0123456789";
      const server = await startServer(where, { env: { DSTACK_SERVER_ADMIN_TOKEN: preset } });
      expect(server.adminToken).toBe(preset);
      const me = await createClient(UserService, createGrpcTransport({ baseUrl: server.url })).getMyUser({}, { headers: { authorization: `Bearer ${preset}` } });
      expect(me.user?.username).toBe("admin");
      expect(await server.stop()).toBe(0);
    } finally {
      await where.cleanup();
    }
  });

  it("-n leaves the CLI config alone", async () => {
    const where = await createServerEnv(dialect);
    try {
      const server = await startServer(where, { args: ["-n"] });
      expect(() => readFileSync(join(where.home, ".dstack", "config.yml"))).toThrow();
      expect(await server.stop()).toBe(0);
    } finally {
      await where.cleanup();
    }
  });
});
