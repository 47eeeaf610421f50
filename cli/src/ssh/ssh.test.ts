import { execFile } from "node:child_process";
import { createPrivateKey, createPublicKey, sign, verify } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile, mkdir } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parseConfiguration, type RunConfig } from "@dstack/proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { formatHostEntry, hostAlias, removeHostEntry, setHostEntry, userConfigIncludesDstack, writeHostEntry } from "./config.js";
import { configuredPorts } from "./connect.js";
import { ensureSshIdentity, generateEd25519 } from "./keys.js";
import { mergePortMappings, startPortForwards } from "./ports.js";

const exec = promisify(execFile);
let home: string;

beforeAll(async () => {
  home = await mkdtemp(join(tmpdir(), "dstack-ssh-unit-"));
});
afterAll(async () => {
  await rm(home, { recursive: true, force: true });
});

describe("the CLI's SSH identity", () => {
  it("node:crypto's ed25519 key is a valid OpenSSH private key whose public half is the .pub line", async () => {
    const key = generateEd25519("me@box (dstack)");
    const path = join(home, "node_key");
    await writeFile(path, key.privateKey, { mode: 0o600 });
    // ssh-keygen parses the openssh-key-v1 file and finds the same public key (and comment).
    const { stdout } = await exec("ssh-keygen", ["-y", "-f", path]);
    expect(stdout.trim().split(" ").slice(0, 2)).toEqual(key.publicKey.split(" ").slice(0, 2));
    expect(key.publicKey).toMatch(/^ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI[A-Za-z0-9+/]+=* me@box \(dstack\)$/);
  });

  it("is made once under HOME/.dstack/ssh (0600) and reused", async () => {
    const env = { HOME: join(home, "h1") };
    const a = await ensureSshIdentity(env);
    expect(a.created).toBe(true);
    expect(a.privateKeyPath).toBe(join(env.HOME, ".dstack", "ssh", "id_rsa"));
    expect((await stat(a.privateKeyPath)).mode & 0o777).toBe(0o600);
    expect(a.publicKey).toMatch(/^ssh-ed25519 /);
    const b = await ensureSshIdentity(env);
    expect([b.created, b.publicKey]).toEqual([false, a.publicKey]);
    // A lost .pub comes back from the private key.
    await rm(`${a.privateKeyPath}.pub`);
    expect((await ensureSshIdentity(env)).publicKey.split(" ").slice(0, 2)).toEqual(a.publicKey.split(" ").slice(0, 2));
  });

  it("signs with the node-made key as ssh would verify it (raw ed25519 round trip)", () => {
    const key = generateEd25519("x");
    // The private section holds seed||pk; rebuild the key from the PEM body to check the halves match.
    const body = Buffer.from(key.privateKey.split("\n").slice(1, -2).join(""), "base64");
    const pk = Buffer.from(key.publicKey.split(" ")[1]!, "base64").subarray(-32);
    const seedAt = body.indexOf(Buffer.concat([pk, Buffer.from([0, 0, 0, 64])])) + 36;
    const seed = body.subarray(seedAt, seedAt + 32);
    const priv = createPrivateKey({ key: Buffer.concat([Buffer.from("302e020100300506032b657004220420", "hex"), seed]), format: "der", type: "pkcs8" });
    const pub = createPublicKey({ key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), pk]), format: "der", type: "spki" });
    expect(verify(null, Buffer.from("m"), pub, sign(null, Buffer.from("m"), priv))).toBe(true);
  });
});

describe("~/.dstack/ssh/config", () => {
  const entry = (alias: string) => formatHostEntry({ alias, project: "main", run: alias, identityFile: "/h/.dstack/ssh/id_rsa", node: "/usr/bin/node", dstackBin: "/r/cli/bin/dstack.js" });

  it("an entry: the alias, root, the key only, no host key checks, the ssh-proxy ProxyCommand with absolute paths", () => {
    expect(entry("web")).toBe(
      [
        "Host web",
        "  HostName web",
        "  User root",
        "  IdentityFile /h/.dstack/ssh/id_rsa",
        "  IdentitiesOnly yes",
        "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null",
        "  LogLevel ERROR",
        "  ServerAliveInterval 30",
        '  ProxyCommand "/usr/bin/node" "/r/cli/bin/dstack.js" ssh-proxy --project main web',
        "",
      ].join("\n"),
    );
    const odd = formatHostEntry({ alias: hostAlias("r", 1, 2), project: "p", run: "r", replica: 1, job: 2, identityFile: "/a b/%k", node: "/n", dstackBin: '/x"$y/d.js' });
    expect(odd).toContain("Host r-2-1\n");
    expect(odd).toContain('  IdentityFile "/a b/%%k"\n');
    expect(odd).toContain('  ProxyCommand "/n" "/x\\"\\$y/d.js" ssh-proxy --project p --replica 1 --job 2 r\n');
  });

  it("updates its host in place and keeps everything else", () => {
    const before = `# mine\nHost other\n  HostName 10.0.0.1\n\n${entry("web")}\nHost web-2\n  User x\n`;
    const replaced = setHostEntry(before, "web", entry("web").replace("User root", "User ubuntu"));
    expect(replaced).toBe(`# mine\nHost other\n  HostName 10.0.0.1\n\n${entry("web").replace("User root", "User ubuntu")}\nHost web-2\n  User x\n`);
    const added = setHostEntry(replaced, "api", entry("api"));
    expect(added.endsWith(`\n\n${entry("api")}`)).toBe(true);
    const removed = setHostEntry(added, "web", null);
    expect(removed).not.toContain("Host web\n");
    expect(removed).toContain("Host web-2\n");
    expect(removed).toContain("Host api\n");
    expect(setHostEntry("", "x", null)).toBe("");
    expect(setHostEntry("", "x", entry("x"))).toBe(entry("x"));
  });

  it("writes the file 0600 and finds the Include in ~/.ssh/config", async () => {
    const env = { HOME: join(home, "h2") };
    const path = await writeHostEntry(env, { alias: "a", project: "main", run: "a", identityFile: "/k" });
    await writeHostEntry(env, { alias: "b", project: "main", run: "b", identityFile: "/k" });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    await removeHostEntry(env, "a");
    const text = await readFile(path, "utf8");
    expect(text).toMatch(/^Host b\n/);
    expect(text).not.toContain("Host a\n");

    expect(await userConfigIncludesDstack(env)).toBe(false);
    await mkdir(join(env.HOME, ".ssh"));
    await writeFile(join(env.HOME, ".ssh", "config"), "Host x\n  User y\n");
    expect(await userConfigIncludesDstack(env)).toBe(false);
    await writeFile(join(env.HOME, ".ssh", "config"), "include   ~/.dstack/ssh/config\nHost x\n");
    expect(await userConfigIncludesDstack(env)).toBe(true);
    await writeFile(join(env.HOME, ".ssh", "config"), `Include ${join(env.HOME, ".dstack", "ssh", "*")}\n`);
    expect(await userConfigIncludesDstack(env)).toBe(true);
  });
});

describe("ports to forward", () => {
  const cfg = (yaml: string) => parseConfiguration(yaml, ".dstack.yml") as RunConfig;

  it("a task's ports (its group's for multi-group tasks), a dev environment's, a service's port as itself", () => {
    expect(configuredPorts(cfg("type: task\ncommands: [x]\nports: [8080, '9000:9001', '*:7000']\n"))).toEqual([
      { localPort: 8080, containerPort: 8080 },
      { localPort: 9000, containerPort: 9001 },
      { containerPort: 7000 },
    ]);
    expect(configuredPorts(cfg("type: service\ncommands: [x]\nport: 8000\n"))).toEqual([{ localPort: 8000, containerPort: 8000 }]);
    expect(configuredPorts(cfg("type: dev-environment\nide: vscode\nports: [3000]\n"))).toEqual([{ localPort: 3000, containerPort: 3000 }]);
    const groups = cfg("type: task\ngroups:\n  - {name: a, nodes: 2, commands: [x], ports: [1000]}\n  - {name: b, nodes: 1, commands: [y], ports: [2000]}\n");
    expect([configuredPorts(groups, 1), configuredPorts(groups, 2), configuredPorts(groups, 3)]).toEqual([[{ localPort: 1000, containerPort: 1000 }], [{ localPort: 2000, containerPort: 2000 }], []]);
  });

  it("--port replaces the mapping of its container port and adds others", () => {
    expect(mergePortMappings([{ localPort: 80, containerPort: 80 }, { localPort: 90, containerPort: 90 }], [{ localPort: 8080, containerPort: 80 }, { containerPort: 5000 }])).toEqual([
      { localPort: 8080, containerPort: 80 },
      { localPort: 90, containerPort: 90 },
      { containerPort: 5000 },
    ]);
  });

  it("a local port in use moves to the next free one; *:PORT takes any", async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    try {
      const f = await startPortForwards({ serverUrl: "http://127.0.0.1:9", token: "t", project: "p", run: "r", mappings: [{ localPort: port, containerPort: 80 }, { containerPort: 81 }] });
      expect(f.forwards[0]).toMatchObject({ containerPort: 80, localHost: "127.0.0.1", requestedPort: port });
      expect(f.forwards[0]!.localPort).toBeGreaterThan(port);
      expect(f.forwards[1]!.requestedPort).toBeUndefined();
      expect(f.forwards[1]!.localPort).toBeGreaterThan(0);
      await f.close();
    } finally {
      taken.close();
    }
  });
});
