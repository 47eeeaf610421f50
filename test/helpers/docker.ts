// Real-Docker helpers for integration tests: a dockerode client, a check that the engine and the
// local test images are there (with a message saying how to get them), and a one-shot
// "run this command in a container and give me exit code, stdout and stderr".
//
// The engine and the images come from `bash scripts/setup.sh` (images: scripts/make-test-images.sh).
import Docker from "dockerode";
import type { ContainerCreateOptions } from "dockerode";

/** The local test images. Neither is in a registry; both are made with `docker import`. */
export const TEST_IMAGES = {
  /** busybox-static, applets symlinked in /bin; no /etc/passwd, no libc. */
  busybox: "dstack-test/busybox:1",
  /** glibc userland: bash, dash as sh, coreutils, grep, sed, tar; /etc/passwd with root; no Node, git or sshd. */
  glibc: "dstack-test/glibc:1",
} as const;

/** Label put on every container these helpers create, so leftovers can be found and removed. */
export const TEST_CONTAINER_LABEL = "dstack-test.helper";

const SETUP_HINT = "Run `bash scripts/setup.sh` as root: it installs and starts Docker and builds the test images.";

let client: Docker | undefined;

/** A dockerode client on DOCKER_HOST when set, else on /var/run/docker.sock. */
export function docker(): Docker {
  if (!client) {
    // Without options docker-modem reads DOCKER_HOST (unix://, tcp://, ssh://) and DOCKER_CERT_PATH.
    client = process.env.DOCKER_HOST ? new Docker() : new Docker({ socketPath: "/var/run/docker.sock" });
  }
  return client;
}

function engineAddress(): string {
  return process.env.DOCKER_HOST ?? "unix:///var/run/docker.sock";
}

const checks = new Map<string, Promise<void>>();

/**
 * Fails (throws) with an actionable message when the engine does not answer or a test image is
 * missing. It never skips. The check runs once per set of images and its outcome is cached, so
 * calling it from `beforeEach` is cheap and makes every test fail with the message.
 */
export function requireTestImages(images: readonly string[] = Object.values(TEST_IMAGES)): Promise<void> {
  const key = `${engineAddress()} ${[...images].sort().join(" ")}`;
  let check = checks.get(key);
  if (!check) {
    check = checkEngineAndImages(images);
    checks.set(key, check);
  }
  return check;
}

async function checkEngineAndImages(images: readonly string[]): Promise<void> {
  const d = docker();
  try {
    await withTimeout(d.ping(), 10_000, "docker ping timed out after 10 s");
  } catch (err) {
    throw new Error(`The Docker engine at ${engineAddress()} does not answer (${describe(err)}). ${SETUP_HINT}`);
  }
  const missing: string[] = [];
  for (const image of images) {
    try {
      await d.getImage(image).inspect();
    } catch (err) {
      if (statusOf(err) === 404) missing.push(image);
      else throw new Error(`Inspecting test image ${image} failed (${describe(err)}). ${SETUP_HINT}`);
    }
  }
  if (missing.length > 0) {
    throw new Error(`Test image(s) ${missing.join(", ")} missing from the Docker engine at ${engineAddress()}. ${SETUP_HINT}`);
  }
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** host:container[:ro] bind mounts. */
  binds?: string[];
  env?: Record<string, string>;
  /** Defaults to "none"; pass "bridge" to reach the host at the docker0 gateway. */
  networkMode?: string;
  user?: string;
  workingDir?: string;
  /** Overrides for anything else; merged last. */
  create?: Partial<ContainerCreateOptions>;
}

/**
 * Creates, starts and waits for a container, collects its demultiplexed stdout and stderr, and
 * removes it (also when something fails). `cmd` undefined runs the image's CMD.
 */
export async function runContainer(image: string, cmd: string[] | undefined, opts: RunOptions = {}): Promise<RunResult> {
  const d = docker();
  const hostConfig = {
    NetworkMode: opts.networkMode ?? "none",
    Binds: opts.binds ?? [],
    ...opts.create?.HostConfig,
  };
  const container = await d.createContainer({
    Image: image,
    ...(cmd ? { Cmd: cmd } : {}),
    Env: Object.entries(opts.env ?? {}).map(([k, v]) => `${k}=${v}`),
    Labels: { [TEST_CONTAINER_LABEL]: "1" },
    Tty: false,
    ...(opts.user ? { User: opts.user } : {}),
    ...(opts.workingDir ? { WorkingDir: opts.workingDir } : {}),
    ...opts.create,
    HostConfig: hostConfig,
  });
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    const raw = (await container.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    const { stdout, stderr } = demux(Buffer.isBuffer(raw) ? raw : Buffer.from(raw));
    return { exitCode: StatusCode, stdout, stderr };
  } finally {
    await container.remove({ force: true, v: true }).catch(() => undefined);
  }
}

/**
 * Splits Docker's multiplexed log stream (non-TTY containers): frames of an 8-byte header
 * [stream, 0, 0, 0, size as big-endian uint32] then `size` bytes; stream 1 is stdout, 2 stderr.
 */
export function demux(buf: Buffer): { stdout: string; stderr: string } {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let off = 0;
  while (off + 8 <= buf.length) {
    const kind = buf[off];
    const size = buf.readUInt32BE(off + 4);
    const chunk = buf.subarray(off + 8, off + 8 + size);
    if (chunk.length < size) throw new Error(`truncated docker log frame at byte ${off}`);
    if (kind === 2) err.push(chunk);
    else out.push(chunk);
    off += 8 + size;
  }
  if (off !== buf.length) throw new Error(`trailing ${buf.length - off} bytes in docker log stream`);
  return { stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") };
}

function statusOf(err: unknown): number | undefined {
  return typeof err === "object" && err !== null && "statusCode" in err ? Number((err as { statusCode: unknown }).statusCode) : undefined;
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function withTimeout<T>(p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(message)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/**
 * Removes the containers whose names match `name` (Docker's name filter: a substring, or a regex
 * such as `^/local-`). For a test's clean-up after its server stopped: a run's container may still
 * be on its way out then, and the engine outlives the test.
 */
export async function removeContainers(name: string): Promise<void> {
  for (const c of await docker().listContainers({ all: true, filters: { name: [name] } }).catch(() => [])) await docker().getContainer(c.Id).remove({ force: true }).catch(() => {});
}
