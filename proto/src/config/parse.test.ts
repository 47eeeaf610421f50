import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ConfigurationError, collectSecretReferences, fromProtoConfiguration, parseConfiguration, toProtoConfiguration } from "./index.js";
import type { AnyConfig, DevEnvironmentConfig, FleetConfig, GatewayConfig, ServiceConfig, TaskConfig, VolumeConfig } from "./index.js";

const here = dirname(fileURLToPath(import.meta.url));
const parse = (text: string) => parseConfiguration(text, "test.dstack.yml");
const task = (text: string) => parse(`type: task\n${text}`) as TaskConfig;

function issuesOf(text: string) {
  try {
    parse(text);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigurationError);
    return (e as ConfigurationError).issues;
  }
  throw new Error("expected a ConfigurationError");
}

describe("task", () => {
  it("applies dstack's defaults", () => {
    const c = task("commands: [python train.py]");
    expect(c).toMatchObject({
      type: "task",
      nodes: 1,
      privileged: false,
      singleBranch: true,
      priority: 0,
      spotPolicy: "on-demand",
      stopDuration: 300,
      maxDuration: "off",
      idleDuration: 300,
      creationPolicy: "reuse-or-create",
      startupOrder: "any",
      stopCriteria: "all-done",
      env: { values: {}, fromCli: [] },
      resources: { cpu: { count: { min: 2 } }, memory: { min: 8 }, gpu: { count: { min: 0 } }, disk: { size: { min: 100 } } },
    });
    expect(c.retry).toBeUndefined();
  });
  it("reads every common run field", () => {
    const c = task(`
name: train
image: nvcr.io/nvidia/pytorch:24.01-py3
user: 1000:1000
privileged: true
entrypoint: /bin/bash -c
working_dir: ~/work
registry_auth: {username: $oauthtoken, password: "\${{ secrets.ngc }}"}
single_branch: false
shell: bash
env: {A: "1", B: null}
priority: 50
volumes: [data:/data, {name: [a, b], path: /ab}, {instance_path: /cache, path: /root/.cache, optional: true}]
repos: ["https://github.com/dstackai/dstack:/dstack"]
files: [.:/src, "~/.ssh/id_rsa:/root/.ssh/id_rsa"]
dstack: true
commands: [nvidia-smi]
ports: [8080, "3000:3001", "*:9000", {container_port: 22}]
backends: [aws, gcp]
regions: [us-east-1]
availability_zones: [us-east-1a]
instance_types: [p4d.24xlarge]
reservation: cr-123
spot_policy: auto
retry: {on_events: [no-capacity], duration: 2h}
max_duration: 1d
stop_duration: off
max_price: 2.5
creation_policy: reuse
idle_duration: off
utilization_policy: {min_gpu_utilization: 10, time_window: 1h}
schedule: {cron: "0 8 * * mon-fri"}
fleets: [my-fleet, other-project/gpu-fleet]
instances: [host-1, {hostname: 10.0.0.2}, {fleet: my-fleet, instance: 0}]
tags: {team: ml}
backend_options: [{type: vastai, offer_order: price, min_reliability: 0.95}]
setup: [echo old]
home_dir: /root
`);
    expect(c).toMatchObject({
      name: "train",
      user: "1000:1000",
      privileged: true,
      registryAuth: { username: "$oauthtoken", password: "${{ secrets.ngc }}" },
      env: { values: { A: "1" }, fromCli: ["B"] },
      volumes: [
        { kind: "network", names: ["data"], path: "/data" },
        { kind: "network", names: ["a", "b"], path: "/ab" },
        { kind: "instance", instancePath: "/cache", path: "/root/.cache", optional: true },
      ],
      repos: [{ url: "https://github.com/dstackai/dstack", path: "/dstack", ifExists: "error" }],
      files: [{ localPath: ".", path: "/src" }, { localPath: "~/.ssh/id_rsa", path: "/root/.ssh/id_rsa" }],
      ports: [{ localPort: 8080, containerPort: 8080 }, { localPort: 3000, containerPort: 3001 }, { containerPort: 9000 }, { containerPort: 22 }],
      spotPolicy: "auto",
      retry: { onEvents: ["no-capacity"], duration: 7200 },
      maxDuration: 86400,
      stopDuration: "off",
      idleDuration: "off",
      utilizationPolicy: { minGpuUtilization: 10, timeWindow: 3600 },
      schedule: { cron: ["0 8 * * mon-fri"] },
      fleets: [{ name: "my-fleet" }, { project: "other-project", name: "gpu-fleet" }],
      instances: [{ kind: "name", name: "host-1" }, { kind: "hostname", hostname: "10.0.0.2" }, { kind: "fleet", fleet: { name: "my-fleet" }, instance: 0 }],
      backendOptions: [{ type: "vastai", offerOrder: "price", minReliability: 0.95 }],
    });
    expect(collectSecretReferences(c)).toEqual(["ngc"]);
  });
  it("expands retry: true to every event for an hour", () => {
    expect(task("commands: [x]\nretry: true").retry).toEqual({ onEvents: ["no-capacity", "interruption", "error"], duration: 3600 });
    expect(task("commands: [x]\nretry: false").retry).toBeUndefined();
  });
  it("reads python 3.10 written as a YAML number", () => {
    expect(task("python: 3.10\ncommands: [x]").python).toBe("3.10");
    expect(task("python: 3.12\ncommands: [x]").python).toBe("3.12");
  });
  it("reads node groups with names defaulting to their index", () => {
    const c = task("image: ubuntu\ngroups:\n  - name: master\n    commands: [a]\n  - nodes: 3\n    resources: {gpu: H100:8}");
    expect(c.nodes).toBeUndefined();
    expect(c.groups).toEqual([
      expect.objectContaining({ name: "master", nodes: 1, commands: ["a"] }),
      expect.objectContaining({ name: "1", nodes: 3, resources: expect.objectContaining({ gpu: { names: ["H100"], count: { min: 8, max: 8 } } }) }),
    ]);
  });
});

describe("resources", () => {
  const res = (r: string) => task(`commands: [x]\nresources:\n${r}`).resources;
  it("reads every gpu form", () => {
    expect(res("  gpu: A100:80GB:2").gpu).toEqual({ names: ["A100"], memory: { min: 80, max: 80 }, count: { min: 2, max: 2 } });
    expect(res("  gpu: nvidia:24GB..:1..2").gpu).toEqual({ vendor: "nvidia", memory: { min: 24 }, count: { min: 1, max: 2 } });
    expect(res("  gpu: A10G,A100").gpu).toEqual({ names: ["A10G", "A100"], count: { min: 1 } });
    expect(res("  gpu: amd:MI300X:8").gpu).toEqual({ vendor: "amd", names: ["MI300X"], count: { min: 8, max: 8 } });
    expect(res("  gpu: 2").gpu).toEqual({ count: { min: 2, max: 2 } });
    expect(res("  gpu:\n    name: [H100, H200]\n    count: 1..8\n    memory: 80GB..\n    total_memory: 640GB\n    compute_capability: 9.0\n    vendor: nvidia").gpu).toEqual({
      vendor: "nvidia", names: ["H100", "H200"], count: { min: 1, max: 8 }, memory: { min: 80 }, totalMemory: { min: 640, max: 640 }, computeCapability: "9.0",
    });
    expect(res("  gpu:\n    name: A100").gpu).toEqual({ names: ["A100"], count: { min: 1 } });
  });
  it("reads memory, cpu, disk and shm_size", () => {
    expect(res("  memory: 16GB..\n  cpu: x86:16\n  disk: {size: 1TB}\n  shm_size: 8GB")).toEqual({
      cpu: { arch: "x86", count: { min: 16, max: 16 } }, memory: { min: 16 }, shmSize: 8, gpu: { count: { min: 0 } }, disk: { size: { min: 1024, max: 1024 } },
    });
    expect(res("  cpu: 2..8\n  disk: 100GB..").cpu).toEqual({ count: { min: 2, max: 8 } });
  });
});

describe("service", () => {
  const svc = (text: string) => parse(`type: service\n${text}`) as ServiceConfig;
  it("applies defaults and the model shorthand", () => {
    const c = svc("image: vllm/vllm-openai\nport: 8000\nmodel: meta-llama/Llama-3.1-8B");
    expect(c).toMatchObject({
      port: { localPort: 80, containerPort: 8000 },
      model: { type: "chat", name: "meta-llama/Llama-3.1-8B", format: "openai", prefix: "/v1" },
      https: true, auth: true, stripPrefix: true, replicas: { min: 1, max: 1 }, rateLimits: [],
    });
    expect(c.gateway).toBeUndefined();
    expect(c.probes).toBeUndefined();
  });
  it("reads scaling, probes, rate limits, gateways and TGI models", () => {
    const c = svc(`commands: [x]
port: "8000:8000"
gateway: my-gateway
https: auto
auth: false
replicas: 0..4
scaling: {metric: rps, target: 10}
rate_limits: [{prefix: /api, key: {type: header, header: X-Api-Key}, rps: 5, burst: 10}, {rps: 1}]
probes: [{type: http, url: /health, timeout: 5s}, {type: http, method: post, body: "{}", headers: [{name: A, value: b}]}]
model: {type: chat, name: llama, format: tgi, chat_template: t}`);
    expect(c).toMatchObject({
      gateway: { name: "my-gateway" },
      https: "auto",
      replicas: { min: 0, max: 4 },
      scaling: { metric: "rps", target: 10, window: 60, scaleUpDelay: 300, scaleDownDelay: 600 },
      rateLimits: [{ prefix: "/api", key: { type: "header", header: "X-Api-Key" }, rps: 5, burst: 10 }, { prefix: "/", key: { type: "ip_address" }, rps: 1, burst: 0 }],
      probes: [
        { type: "http", url: "/health", method: "get", headers: [], timeout: 5, interval: 15, readyAfter: 1, untilReady: false },
        { type: "http", url: "/", method: "post", body: "{}", headers: [{ name: "A", value: "b" }], timeout: 10 },
      ],
      model: { format: "tgi", name: "llama", chatTemplate: "t" },
    });
    expect(svc("commands: [x]\nport: 80\ngateway: false").gateway).toBe(false);
  });
  it("reads replica groups, including the legacy `replicas: [...]` with `count`", () => {
    const groups = svc("image: x\nport: 80\ngroups:\n  - name: router\n    replicas: 1\n    router: {type: sglang}\n  - replicas: 1..2\n    scaling: {metric: rps, target: 1}").groups;
    expect(groups).toEqual([
      expect.objectContaining({ name: "router", replicas: { min: 1, max: 1 }, router: { type: "sglang" } }),
      expect.objectContaining({ name: "1", replicas: { min: 1, max: 2 } }),
    ]);
    const legacy = svc("port: 80\nreplicas:\n  - count: 2\n    commands: [a]");
    expect(legacy.replicas).toBeUndefined();
    expect(legacy.groups).toEqual([expect.objectContaining({ name: "0", replicas: { min: 2, max: 2 }, commands: ["a"] })]);
  });
  it("rejects a replica range without scaling and scaling without a range", () => {
    expect(issuesOf("type: service\nport: 80\ncommands: [x]\nreplicas: 1..3")[0]).toMatchObject({ path: ["replicas"], line: 4, column: 11 });
    expect(issuesOf("type: service\nport: 80\ncommands: [x]\nscaling: {metric: rps, target: 1}")[0]!.message).toMatch("`replicas` must be set to a range");
    expect(issuesOf("type: service\nport: 80\ncommands: [x]\nreplicas: 1..")[0]!.message).toMatch("maximum number of replicas is required");
  });
  it("rejects fields set at both the service and group level", () => {
    const issues = issuesOf("type: service\nport: 80\nimage: a\ngroups:\n  - replicas: 1\n    image: b");
    expect(issues[0]).toMatchObject({ path: ["groups", 0, "image"], line: 6, column: 12 });
  });
});

describe("dev-environment", () => {
  it("applies defaults", () => {
    const c = parse("type: dev-environment\nide: vscode") as DevEnvironmentConfig;
    expect(c).toMatchObject({ ide: "vscode", singleBranch: false, inactivityDuration: "off", init: [], ports: [] });
  });
  it("reads init, version and inactivity_duration", () => {
    const c = parse("type: dev-environment\nide: windsurf\nversion: 1.1.0@abc123\ninit: [pip install x]\ninactivity_duration: 2h") as DevEnvironmentConfig;
    expect(c).toMatchObject({ version: "1.1.0@abc123", init: ["pip install x"], inactivityDuration: 7200 });
  });
  it("rejects entrypoint and a bad windsurf version", () => {
    expect(issuesOf("type: dev-environment\nentrypoint: x")[0]).toMatchObject({ path: ["entrypoint"], line: 2, column: 13 });
    expect(issuesOf("type: dev-environment\nide: windsurf\nversion: latest")[0]!.message).toMatch("version@commit");
    expect(issuesOf("type: dev-environment\nversion: '1'")[0]!.message).toMatch("requires `ide`");
  });
});

describe("fleet", () => {
  it("reads nodes in every form", () => {
    const nodes = (n: string) => (parse(`type: fleet\nnodes: ${n}`) as FleetConfig).nodes;
    expect(nodes("2")).toEqual({ min: 2, target: 2, max: 2 });
    expect(nodes("0..4")).toEqual({ min: 0, target: 0, max: 4 });
    expect(nodes("1..")).toEqual({ min: 1, target: 1 });
    expect(nodes("{min: 1, target: 2, max: 3}")).toEqual({ min: 1, target: 2, max: 3 });
    expect(nodes("{max: 3}")).toEqual({ min: 0, target: 0, max: 3 });
    expect(() => nodes("{min: 3, max: 1}")).toThrow("max must not be less than min");
  });
  it("reads an SSH fleet with hosts as strings or objects", () => {
    const c = parse(`type: fleet
name: on-prem
placement: cluster
blocks: auto
env: [HF_HOME=/cache]
ssh_config:
  user: ubuntu
  identity_file: ~/.ssh/id_rsa
  proxy_jump: {hostname: bastion, user: jump, identity_file: ~/.ssh/jump}
  network: 10.0.0.0/24
  hosts:
    - 3.255.177.51
    - hostname: 3.255.177.52
      port: 2222
      internal_ip: 10.0.0.2
      blocks: 4`) as FleetConfig;
    expect(c).toMatchObject({
      placement: "cluster", blocks: "auto", idleDuration: 259200, spotPolicy: "on-demand",
      env: { values: { HF_HOME: "/cache" }, fromCli: [] },
      sshConfig: {
        user: "ubuntu", identityFile: "~/.ssh/id_rsa", network: "10.0.0.0/24",
        proxyJump: { hostname: "bastion", user: "jump", identityFile: "~/.ssh/jump" },
        hosts: [{ hostname: "3.255.177.51" }, { hostname: "3.255.177.52", port: 2222, internalIp: "10.0.0.2", blocks: 4 }],
      },
    });
    expect(c.resources).toBeUndefined();
  });
  it("reads a cloud fleet", () => {
    const c = parse("type: fleet\nnodes: 2\nresources: {gpu: 24GB}\nbackends: [aws]\nidle_duration: 1h\nspot_policy: spot") as FleetConfig;
    expect(c).toMatchObject({ idleDuration: 3600, spotPolicy: "spot", backends: ["aws"], resources: { gpu: { memory: { min: 24, max: 24 }, count: { min: 1 } } } });
  });
});

describe("volume and gateway", () => {
  it("reads volumes per backend", () => {
    expect(parse("type: volume\nname: v\nbackend: aws\nregion: eu-west-1\nsize: 100GB") as VolumeConfig).toEqual({
      type: "volume", backend: "aws", name: "v", region: "eu-west-1", size: 100, autoCleanupDuration: "off",
    });
    expect(parse("type: volume\nbackend: kubernetes\nclaim_name: pvc") as VolumeConfig).toEqual({
      type: "volume", backend: "kubernetes", region: "", claimName: "pvc", accessModes: ["ReadWriteOnce"], readOnly: false, autoCleanupDuration: "off",
    });
    expect(issuesOf("type: volume\nbackend: kubernetes\nvolume_id: x")[0]).toMatchObject({ path: ["volume_id"], line: 3, column: 1 });
    expect(issuesOf("type: volume\nbackend: azure\nregion: x")[0]).toMatchObject({ path: ["backend"], line: 2, column: 10 });
  });
  it("reads gateways with certificate defaults", () => {
    expect(parse("type: gateway\nname: g\nbackend: aws\nregion: eu-west-1\ndomain: example.com") as GatewayConfig).toEqual({
      type: "gateway", name: "g", backend: "aws", region: "eu-west-1", domain: "example.com", publicIp: true, certificate: { type: "lets-encrypt" }, replicas: 1,
    });
    expect((parse("type: gateway\nbackend: aws\nregion: r\ncertificate: null") as GatewayConfig).certificate).toBeNull();
    expect((parse("type: gateway\nbackend: aws\nregion: r\ncertificate: {type: acm, arn: 'arn:x'}") as GatewayConfig).certificate).toEqual({ type: "acm", arn: "arn:x" });
  });
});

describe("errors", () => {
  it("hints at the closest known field", () => {
    const [i] = issuesOf("type: task\ncommands: [x]\nresources:\n  gpus: 1");
    expect(i).toMatchObject({ path: ["resources", "gpus"], line: 4, column: 3 });
    expect(i!.message).toBe("Unknown field `gpus`; did you mean `gpu`?");
  });
  it("names the configuration type a misplaced field belongs to", () => {
    expect(issuesOf("type: task\ncommands: [x]\nide: vscode")[0]!.message).toMatch("dev-environment");
  });
  it("formats the message as file:line:column", () => {
    try {
      parseConfiguration("type: task\ncommands: [x]\nnodez: 2\n", "train.dstack.yml");
    } catch (e) {
      expect((e as Error).message).toBe("train.dstack.yml:3:1: nodez: Unknown field `nodez`; did you mean `nodes`?");
    }
  });
  it("reports every problem at once", () => {
    const issues = issuesOf("type: task\ncomands: [x]\nimage: 3\nresources: {memory: 1XB}");
    expect(issues.map((i) => i.line)).toEqual([2, 3, 4]);
  });
  it("rejects non-mapping documents and a missing type", () => {
    expect(issuesOf("just text")[0]!.message).toMatch("must be a mapping");
    expect(issuesOf("")[0]!.message).toMatch("must be a mapping");
    expect(issuesOf("name: x")[0]!.message).toMatch("Missing `type`");
  });
});

function headerExpectation(text: string): { line: number; column: number; fragment: string } {
  const m = /^# expect: (\d+):(\d+) (.+)$/m.exec(text);
  if (!m) throw new Error("fixture lacks an `# expect: LINE:COL message` header");
  return { line: Number(m[1]), column: Number(m[2]), fragment: m[3]! };
}

describe("invalid fixtures", () => {
  const dir = join(here, "fixtures/invalid");
  for (const file of readdirSync(dir).filter((f) => f.endsWith(".dstack.yml"))) {
    it(file, () => {
      const text = readFileSync(join(dir, file), "utf8");
      const want = headerExpectation(text);
      const issues = issuesOf(text);
      expect(issues.some((i) => i.line === want.line && i.column === want.column && i.message.includes(want.fragment)), JSON.stringify(issues)).toBe(true);
    });
  }
});

const fixtureDirs = ["fixtures/dstack-docs", "fixtures/valid"];
const fixtures = fixtureDirs.flatMap((d) => readdirSync(join(here, d)).filter((f) => f.endsWith(".dstack.yml")).map((f) => join(here, d, f)));

describe("dstack documentation examples", () => {
  it("has examples of every configuration type", () => {
    const types = new Set(fixtures.map((f) => /^type:\s*(\S+)/m.exec(readFileSync(f, "utf8"))?.[1]));
    expect([...types].sort()).toEqual(["dev-environment", "fleet", "gateway", "service", "task", "volume"]);
    expect(fixtures.length).toBeGreaterThanOrEqual(40);
  });
  for (const file of fixtures) {
    it(`parses and round-trips ${file.slice(here.length + 1)}`, () => {
      const config: AnyConfig = parseConfiguration(readFileSync(file, "utf8"), file);
      expect(fromProtoConfiguration(toProtoConfiguration(config))).toEqual(config);
    });
  }
});
