// Smoke test of the real-Docker test environment: the engine answers through dockerode, and the
// two local test images run commands with exact exit codes, separate stdout/stderr, bind mounts
// and bridge networking. If this file fails, every Docker-backed test after it would too.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeEach, describe, expect, it } from "vitest";
import { TEST_IMAGES, demux, docker, requireTestImages, runContainer } from "../helpers/docker.js";

// Checked before every test (the check runs once and is cached) so that, without an engine or
// the images, each test fails with the message naming scripts/setup.sh rather than being skipped.
beforeEach(async () => {
  await requireTestImages();
});

describe("the Docker engine", () => {
  it("answers a ping and reports a server version through dockerode", async () => {
    const ping = await docker().ping();
    expect(String(ping)).toBe("OK");
    const version = await docker().version();
    expect(version.ApiVersion).toMatch(/^1\.\d+$/);
  });

  it("holds both test images with a PATH, a default command and the script-hash label", async () => {
    for (const [image, cmd] of [
      [TEST_IMAGES.busybox, ["/bin/sh"]],
      [TEST_IMAGES.glibc, ["/bin/bash"]],
    ] as const) {
      const info = await docker().getImage(image).inspect();
      expect(info.Config.Env).toContain("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
      expect(info.Config.Cmd).toEqual(cmd);
      expect(info.Config.Labels?.["dstack-test.script-sha256"]).toMatch(/^[0-9a-f]{64}$/);
    }
  });
});

describe("a container from dstack-test/busybox:1", () => {
  it("returns the exact exit code and keeps stdout and stderr apart", async () => {
    const r = await runContainer(TEST_IMAGES.busybox, ["sh", "-c", "echo to-stdout; echo to-stderr >&2; echo more; exit 3"]);
    expect(r).toEqual({ exitCode: 3, stdout: "to-stdout\nmore\n", stderr: "to-stderr\n" });
  });

  it("has the applets the tests rely on, and no user database", async () => {
    const applets = ["sh", "echo", "cat", "sleep", "true", "env", "ls", "id", "nc", "wget", "tar"];
    const r = await runContainer(TEST_IMAGES.busybox, [
      "sh",
      "-c",
      `for a in ${applets.join(" ")}; do command -v "$a" >/dev/null || { echo "missing $a"; exit 9; }; done; ` +
        "test ! -e /etc/passwd && echo no-passwd; id -u; id -un",
    ]);
    // `id -un` cannot name uid 0 without /etc/passwd (busybox prints the number, complains and
    // fails): the runner must cope with that.
    expect(r.stdout).toBe("no-passwd\n0\n0\n");
    expect(r.stderr).toMatch(/unknown ID 0/);
    expect(r.exitCode).toBe(1);
  });

  it("writes a file through a bind mount that the host can read", async () => {
    const dir = await mkdtemp(join(tmpdir(), "dstack-docker-smoke-"));
    try {
      await writeFile(join(dir, "in.txt"), "from-host\n");
      const r = await runContainer(TEST_IMAGES.busybox, ["sh", "-c", "cat /data/in.txt > /data/out.txt; echo written-in-container >> /data/out.txt"], {
        binds: [`${dir}:/data`],
      });
      expect(r).toEqual({ exitCode: 0, stdout: "", stderr: "" });
      expect(await readFile(join(dir, "out.txt"), "utf8")).toBe("from-host\nwritten-in-container\n");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("passes environment variables and reaches a TCP server on the host over the bridge", async () => {
    const server: Server = createServer((sock) => {
      sock.once("data", (d) => sock.end(`pong:${d.toString().trim()}\n`));
    });
    await new Promise<void>((resolve) => server.listen(0, "0.0.0.0", resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      // The host is the container's default gateway (docker0's address). `docker network inspect`
      // does not always report it (a dockerd that picked the subnet itself lists no Gateway).
      const script = 'gw=$(ip route | awk \'/^default/ {print $3}\'); echo "$GREETING" | nc -w 5 "$gw" "$HOST_PORT"';
      const r = await runContainer(TEST_IMAGES.busybox, ["sh", "-c", script], {
        networkMode: "bridge",
        env: { GREETING: "ping", HOST_PORT: String(port) },
      });
      expect(r).toEqual({ exitCode: 0, stdout: "pong:ping\n", stderr: "" });
    } finally {
      server.close();
    }
  });
});

describe("a container from dstack-test/glibc:1", () => {
  it("runs bash with the exact exit code, stdout and stderr", async () => {
    const r = await runContainer(TEST_IMAGES.glibc, ["bash", "-c", 'echo "bash $BASH_VERSION"; ls /nonexistent; exit 5']);
    expect(r.exitCode).toBe(5);
    expect(r.stdout).toMatch(/^bash \d+\.\d+\.\d+/);
    expect(r.stderr).toBe("ls: cannot access '/nonexistent': No such file or directory\n");
  });

  it("knows root by name and has coreutils and sh, but no node, git or sshd", async () => {
    const r = await runContainer(TEST_IMAGES.glibc, [
      "bash",
      "-c",
      "whoami; sh -c 'echo sh-works'; env --version | head -n1; for b in node git sshd; do command -v $b || echo no-$b; done",
    ]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toMatch(/^root\nsh-works\nenv \(GNU coreutils\) [\d.]+\nno-node\nno-git\nno-sshd\n$/);
    expect(r.exitCode).toBe(0);
  });

  it("runs its default command when none is given", async () => {
    const r = await runContainer(TEST_IMAGES.glibc, undefined);
    expect(r).toEqual({ exitCode: 0, stdout: "", stderr: "" });
  });
});

describe("demux", () => {
  it("splits interleaved frames of Docker's multiplexed log stream", () => {
    const frame = (kind: number, text: string) => {
      const body = Buffer.from(text);
      const head = Buffer.alloc(8);
      head[0] = kind;
      head.writeUInt32BE(body.length, 4);
      return Buffer.concat([head, body]);
    };
    const buf = Buffer.concat([frame(1, "a"), frame(2, "b"), frame(1, "c\n"), frame(2, "")]);
    expect(demux(buf)).toEqual({ stdout: "ac\n", stderr: "b" });
    expect(() => demux(buf.subarray(0, buf.length - 5))).toThrow(/truncated|trailing/);
  });
});

