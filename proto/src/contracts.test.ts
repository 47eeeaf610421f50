// Contract checks for the protobuf definitions under proto/dstack:
//  - they pass `buf lint` (and every element we own carries a doc comment),
//  - proto/gen is exactly what `buf generate` produces from them (CI fails on a forgotten regenerate),
//  - once a baseline is recorded, they stay wire-compatible with it and with the previous commit,
//  - representative messages survive binary and JSON round trips.
import { spawnSync, type SpawnSyncReturns } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import {
  create,
  equals,
  fromBinary,
  fromJson,
  toBinary,
  toJson,
  type DescMessage,
  type MessageShape,
} from "@bufbuild/protobuf";
import { durationFromMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";

import { ConfigurationSchema } from "../gen/dstack/api/v1/configuration_pb.js";
import {
  JobStatus,
  RepoType,
  RunSchema,
  RunSpecSchema,
  RunStatus,
} from "../gen/dstack/api/v1/run_pb.js";
import { ApplyRunRequestSchema, RunService } from "../gen/dstack/api/v1/run_service_pb.js";
import { LogService as ApiLogService } from "../gen/dstack/api/v1/log_pb.js";
import {
  ShimLinkService,
  ShimLinkServiceConnectRequestSchema,
  ShimLinkServiceConnectResponseSchema,
  TaskNetworkMode,
  TaskState,
} from "../gen/dstack/agent/v1/shim_link_pb.js";
import {
  RunnerLinkService,
  RunnerLinkServiceConnectRequestSchema,
  JobState,
} from "../gen/dstack/agent/v1/runner_link_pb.js";
import { LinkErrorCode } from "../gen/dstack/agent/v1/link_pb.js";
import { LogService as AgentLogService, LogStream, PushRequestSchema, PushResponseSchema } from "../gen/dstack/agent/v1/log_pb.js";
import { CodeService } from "../gen/dstack/agent/v1/code_pb.js";
import { OpenRequestSchema, TunnelService } from "../gen/dstack/agent/v1/tunnel_pb.js";
import { AgentKind, EnrollRequestSchema } from "../gen/dstack/agent/v1/enrollment_pb.js";
import { GpuVendor } from "../gen/dstack/agent/v1/host_pb.js";
import { JobTerminationReason } from "../gen/dstack/api/v1/run_pb.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const bin = join(root, "node_modules", ".bin");
const env = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` };

function run(cmd: string, args: string[]): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd: root, env, encoding: "utf8", maxBuffer: 64 * 1024 * 1024 });
}

function buf(args: string[]): SpawnSyncReturns<string> {
  return run(join(bin, "buf"), args);
}

function output(r: SpawnSyncReturns<string>): string {
  return `exit ${r.status}${r.error ? ` (${r.error.message})` : ""}\n${r.stdout}${r.stderr}`;
}

/** Every file under dir, as paths relative to dir. */
function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(dir, join(d.parentPath, d.name)))
    .sort();
}

/**
 * What `buf breaking` compares the working tree against. Contracts are free to change until a
 * baseline is recorded in proto/BREAKING_BASELINE (the commit of the first released contracts);
 * from then on they must stay wire-compatible with that baseline and with the previous commit.
 * Computed at collection time so the test titles say what is compared.
 */
function breakingTargets(): { title: string; ref: string; depth: number }[] {
  const git = (args: string[]) => run("git", args);
  let baseline: string;
  try {
    baseline = readFileSync(join(root, "proto/BREAKING_BASELINE"), "utf8").split(/\s/)[0] ?? "";
  } catch {
    return [];
  }
  const depthTo = (ref: string) => Number(git(["rev-list", "--count", `${ref}..HEAD`]).stdout.trim()) + 1;
  const targets = [{ title: `the released baseline ${baseline.slice(0, 12)}`, ref: baseline, depth: depthTo(baseline) }];
  const parent = git(["rev-parse", "--verify", "HEAD~1"]).stdout.trim();
  if (parent && git(["merge-base", "--is-ancestor", baseline, parent]).status === 0 && parent !== baseline) {
    targets.push({ title: `the previous commit ${parent.slice(0, 12)}`, ref: parent, depth: depthTo(parent) });
  }
  return targets;
}

describe("protobuf contracts", () => {
  it("pass buf lint with the repository's buf.yaml", () => {
    const r = buf(["lint"]);
    expect(r.status, output(r)).toBe(0);
  });

  it("document every service, rpc, message, field and enum value (buf COMMENTS rules, except configuration.proto)", () => {
    const dir = mkdtempSync(join(tmpdir(), "dstack-buf-comments-"));
    try {
      const config = join(dir, "buf.yaml");
      writeFileSync(
        config,
        stringify({
          version: "v2",
          modules: [{ path: "proto", excludes: ["proto/node_modules", "proto/gen", "proto/src"] }],
          // configuration.proto belongs to the configuration-schema work and is checked there.
          lint: { use: ["COMMENTS"], ignore: ["proto/dstack/api/v1/configuration.proto"] },
        }),
      );
      const r = buf(["lint", "--config", config]);
      expect(r.status, output(r)).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("proto/gen is up to date with `buf generate` (run `npx buf generate` if this fails)", () => {
    const dir = mkdtempSync(join(tmpdir(), "dstack-buf-gen-"));
    try {
      const template = parse(readFileSync(join(root, "buf.gen.yaml"), "utf8")) as {
        clean?: boolean;
        plugins: { out: string }[];
      };
      const fresh = join(dir, "gen");
      template.clean = false;
      for (const p of template.plugins) p.out = join(fresh, relative(join(root, "proto/gen"), join(root, p.out)));
      const templatePath = join(dir, "buf.gen.yaml");
      writeFileSync(templatePath, stringify(template));
      const r = buf(["generate", "--template", templatePath]);
      expect(r.status, output(r)).toBe(0);

      const committed = join(root, "proto/gen");
      const want = listFiles(fresh);
      const have = listFiles(committed);
      const stale = [
        ...want.filter((f) => !have.includes(f)).map((f) => `missing: proto/gen/${f}`),
        ...have.filter((f) => !want.includes(f)).map((f) => `not generated (stale): proto/gen/${f}`),
        ...want
          .filter((f) => have.includes(f))
          .filter((f) => !readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f))))
          .map((f) => `differs: proto/gen/${f}`),
      ];
      expect(stale, "proto/gen is out of date; run `npx buf generate`").toEqual([]);
      expect(want.length).toBeGreaterThan(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  for (const target of breakingTargets()) {
    it(`are wire-compatible (buf breaking, FILE rules) with ${target.title}`, () => {
      const r = buf(["breaking", "--against", `.git#ref=${target.ref},depth=${target.depth + 1}`]);
      expect(r.status, output(r)).toBe(0);
    });
  }
});

function roundTrip<Desc extends DescMessage>(schema: Desc, msg: MessageShape<Desc>): void {
  const bin = fromBinary(schema, toBinary(schema, msg));
  expect(equals(schema, bin, msg), `binary round trip of ${schema.typeName}`).toBe(true);
  const json = JSON.parse(JSON.stringify(toJson(schema, msg))) as Parameters<typeof fromJson>[1];
  const back = fromJson(schema, json);
  expect(equals(schema, back, msg), `JSON round trip of ${schema.typeName}`).toBe(true);
}

describe("generated messages", () => {
  it("carry a SubmitTask command in a shim link envelope through binary and JSON", () => {
    const msg = create(ShimLinkServiceConnectResponseSchema, {
      message: {
        case: "command",
        value: {
          requestId: "req-1",
          deadline: durationFromMs(30_000),
          command: {
            case: "submitTask",
            value: {
              taskId: "6f1c2a7e-0000-4000-8000-000000000001",
              containerName: "my-run-0-0",
              imageName: "dstackai/base:0.15-base-ubuntu24.04",
              gpu: -1,
              cpu: 2.5,
              memoryBytes: 8n * 1024n ** 3n,
              networkMode: TaskNetworkMode.BRIDGE,
              ports: [8000, 10022],
              instanceMounts: [{ instancePath: "/data", path: "/mnt/data" }],
              env: { HTTP_PROXY: "http://proxy:3128" },
              runner: { joinToken: "tok", agentUrl: "https://server:3001", caCertificatePem: "-----BEGIN CERTIFICATE-----" },
            },
          },
        },
      },
    });
    roundTrip(ShimLinkServiceConnectResponseSchema, msg);
    const json = toJson(ShimLinkServiceConnectResponseSchema, msg) as Record<string, any>;
    expect(json.command.deadline).toBe("30s");
    expect(json.command.submitTask.networkMode).toBe("TASK_NETWORK_MODE_BRIDGE");
    expect(json.command.submitTask.memoryBytes).toBe("8589934592");
  });

  it("carry task state events and structured errors from the shim", () => {
    const event = create(ShimLinkServiceConnectRequestSchema, {
      message: {
        case: "event",
        value: {
          event: {
            case: "taskStateChanged",
            value: {
              task: {
                taskId: "t1",
                state: TaskState.TERMINATED,
                terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR,
                exitCode: 1,
                pullProgress: { downloadedBytes: 10n, totalBytes: 100n },
                updatedAt: timestampFromDate(new Date("2026-01-02T03:04:05.678Z")),
              },
            },
          },
        },
      },
    });
    roundTrip(ShimLinkServiceConnectRequestSchema, event);
    const hostInfo = create(ShimLinkServiceConnectRequestSchema, {
      message: {
        case: "event",
        value: {
          event: {
            case: "stateReport",
            value: {
              agentVersion: "0.1.0",
              hostInfo: {
                cpus: 16,
                memoryBytes: 64n << 30n,
                gpus: [{ vendor: GpuVendor.NVIDIA, name: "NVIDIA H100 80GB HBM3", memoryBytes: 80n << 30n, uuid: "GPU-1" }],
              },
            },
          },
        },
      },
    });
    roundTrip(ShimLinkServiceConnectRequestSchema, hostInfo);
    const reply = create(RunnerLinkServiceConnectRequestSchema, {
      message: {
        case: "reply",
        value: {
          requestId: "req-2",
          result: { case: "error", value: { code: LinkErrorCode.FAILED_PRECONDITION, message: "already submitted", details: { state: "serve_logs" } } },
        },
      },
    });
    roundTrip(RunnerLinkServiceConnectRequestSchema, reply);
    const state = create(RunnerLinkServiceConnectRequestSchema, {
      message: { case: "event", value: { event: { case: "jobStateChanged", value: { jobSubmissionId: "j", state: JobState.DONE, exitStatus: 0 } } } },
    });
    roundTrip(RunnerLinkServiceConnectRequestSchema, state);
    // exit_status is optional: 0 is present, not absent.
    const back = fromBinary(RunnerLinkServiceConnectRequestSchema, toBinary(RunnerLinkServiceConnectRequestSchema, state));
    expect(back.message.case === "event" && back.message.value.event.case === "jobStateChanged" && back.message.value.event.value.exitStatus).toBe(0);
  });

  it("carry a log batch and its ack", () => {
    const batch = create(PushRequestSchema, {
      batch: {
        jobSubmissionId: "j1",
        firstSequence: 41n,
        entries: [
          { timestamp: timestampFromDate(new Date(1_700_000_000_001)), stream: LogStream.STDOUT, data: new TextEncoder().encode("hello\n") },
          { timestamp: timestampFromDate(new Date(1_700_000_000_002)), stream: LogStream.STDERR, data: new Uint8Array([0xff, 0x00, 0x1b]) },
        ],
      },
    });
    roundTrip(PushRequestSchema, batch);
    const json = toJson(PushRequestSchema, batch) as Record<string, any>;
    expect(json.batch.firstSequence).toBe("41");
    expect(json.batch.entries[1].data).toBe("/wAb");
    roundTrip(PushResponseSchema, create(PushResponseSchema, { jobSubmissionId: "j1", nextSequence: 43n }));
  });

  it("carry a run spec with a configuration, env overrides and timestamps", () => {
    const spec = create(RunSpecSchema, {
      runName: "train",
      configuration: create(ConfigurationSchema, { kind: { case: "task", value: {} } }),
      repo: { repoId: "r1", repoType: RepoType.REMOTE, repoUrl: "https://github.com/x/y.git", hash: "abc" },
      repoCodeHash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      sshKeyPub: "ssh-ed25519 AAAA user@host",
      env: { WANDB_API_KEY: "x", EMPTY: "" },
      runArgs: ["--epochs", "3"],
    });
    roundTrip(RunSpecSchema, spec);
    roundTrip(ApplyRunRequestSchema, create(ApplyRunRequestSchema, { projectName: "main", runSpec: spec, force: true }));
    const run = create(RunSchema, {
      id: "r",
      status: RunStatus.RUNNING,
      submittedAt: timestampFromDate(new Date("2026-05-06T07:08:09Z")),
      runSpec: spec,
      jobs: [{ jobSpec: { jobName: "train-0-0", maxDuration: durationFromMs(3_600_000) }, jobSubmissions: [{ id: "s", status: JobStatus.PULLING, exitStatus: 0 }] }],
    });
    roundTrip(RunSchema, run);
    expect((toJson(RunSchema, run) as Record<string, any>).submittedAt).toBe("2026-05-06T07:08:09Z");
  });

  it("carry tunnel frames and enrollment requests", () => {
    roundTrip(OpenRequestSchema, create(OpenRequestSchema, { frame: { case: "hello", value: { tunnelId: "tun-1" } } }));
    roundTrip(OpenRequestSchema, create(OpenRequestSchema, { frame: { case: "data", value: new Uint8Array([1, 2, 3]) } }));
    roundTrip(OpenRequestSchema, create(OpenRequestSchema, { frame: { case: "halfClose", value: {} } }));
    roundTrip(
      EnrollRequestSchema,
      create(EnrollRequestSchema, { joinToken: "t", csrPem: "-----BEGIN CERTIFICATE REQUEST-----", kind: AgentKind.SHIM, identity: { hostname: "h", machineId: "m" } }),
    );
  });

  it("declare the streaming shapes the agent mesh and API rely on", () => {
    expect(ShimLinkService.method.connect.methodKind).toBe("bidi_streaming");
    expect(RunnerLinkService.method.connect.methodKind).toBe("bidi_streaming");
    expect(AgentLogService.method.push.methodKind).toBe("bidi_streaming");
    expect(TunnelService.method.open.methodKind).toBe("bidi_streaming");
    expect(CodeService.method.download.methodKind).toBe("server_streaming");
    expect(RunService.method.watchRuns.methodKind).toBe("server_streaming");
    expect(RunService.method.uploadCode.methodKind).toBe("unary");
    expect(ApiLogService.method.followLogs.methodKind).toBe("server_streaming");
    expect(ApiLogService.method.pollLogs.methodKind).toBe("unary");
  });
});
