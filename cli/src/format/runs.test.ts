import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { parseConfiguration, toProtoConfiguration } from "@dstack/proto";
import {
  Availability,
  BackendType,
  JobStatus,
  JobSubmissionSchema,
  JobTerminationReason,
  OfferSchema,
  RunSchema,
  RunStatus,
  type Run,
} from "@dstack/proto/api";
import { describe, expect, it } from "vitest";
import { exitCodeForError, exitCodeForRun } from "../exit-codes.js";
import { DstackError } from "../client/errors.js";
import { CliError } from "../io.js";
import { ConfigurationError } from "@dstack/proto";
import { formatOffersTable } from "./offers.js";
import { prettyDate } from "./resources.js";
import { formatFinishedMessage, formatRunsTable, jobStatusText, runStatusText } from "./runs.js";
import { renderTable } from "./table.js";

const NOW = new Date("2024-09-24T12:00:00Z");
const ago = (s: number) => timestampFromDate(new Date(NOW.getTime() - s * 1000));

const plainTask = toProtoConfiguration(parseConfiguration("type: task\ncommands: [echo]\n", "x.yml"));

type SubInit = MessageInitShape<typeof JobSubmissionSchema> & { status: JobStatus };

function run(name: string, status: RunStatus, sub: SubInit, extra: MessageInitShape<typeof RunSchema> = {}): Run {
  const submission = create(JobSubmissionSchema, { id: `${name}-s`, submittedAt: ago(30), ...sub });
  return create(RunSchema, {
    id: name,
    projectName: "main",
    status,
    submittedAt: ago(30),
    runSpec: { runName: name, configuration: plainTask },
    jobs: [{ jobSpec: { jobName: `${name}-0-0` }, jobSubmissions: [submission] }],
    latestJobSubmission: submission,
    ...(extra as object),
  } as MessageInitShape<typeof RunSchema>);
}

const placed = {
  backend: BackendType.REMOTE,
  region: "",
  price: 0,
  instanceType: { name: "gpu-host", resources: { cpus: 8, memoryMib: 32n * 1024n, diskMib: 200n * 1024n, gpus: [{ name: "A100", memoryMib: 80n * 1024n }, { name: "A100", memoryMib: 80n * 1024n }] } },
};

describe("status words", () => {
  it("are the server's (status_message), or the status name from a server that sends none", () => {
    expect(jobStatusText(create(RunSchema).latestJobSubmission)).toBe("-");
    const s = (x: SubInit) => run("r", RunStatus.FAILED, x).latestJobSubmission;
    expect(jobStatusText(s({ status: JobStatus.FAILED, statusMessage: "exited (3)" }))).toBe("exited (3)");
    expect(jobStatusText(s({ status: JobStatus.PULLING }))).toBe("pulling");
    expect(runStatusText(run("r", RunStatus.PENDING, { status: JobStatus.FAILED }, { statusMessage: "retrying" }))).toBe("retrying");
    expect(runStatusText(run("r", RunStatus.RUNNING, { status: JobStatus.RUNNING }))).toBe("running");
  });
});

describe("the runs table", () => {
  it("has dstack's columns and one row per single-job run", () => {
    const runs = [
      run("train", RunStatus.RUNNING, { status: JobStatus.RUNNING, jobProvisioningData: placed }),
      run("hello", RunStatus.SUBMITTED, { status: JobStatus.SUBMITTED }, { submittedAt: ago(5) }),
    ];
    expect(formatRunsTable(runs, { now: NOW })).toBe(
      [
        " NAME   BACKEND  RESOURCES                                  PRICE  STATUS     SUBMITTED",
        " train  ssh      cpu=8 mem=32GB disk=200GB gpu=A100:80GB:2  $0     running    30 sec ago",
        " hello  -        -                                          -      submitted  now",
        "",
      ].join("\n"),
    );
  });

  it("adds INSTANCE TYPE and ERROR with verbose, and lists the jobs of a multi-job run under it", () => {
    const r = run("multi", RunStatus.RUNNING, { status: JobStatus.RUNNING, jobProvisioningData: placed });
    r.jobs.push({ ...r.jobs[0]!, jobSpec: { ...r.jobs[0]!.jobSpec!, jobNum: 1 } });
    const out = formatRunsTable([r], { verbose: true, now: NOW }).split("\n");
    expect(out[0]).toBe(" NAME      BACKEND  RESOURCES                                  INSTANCE TYPE  PRICE  STATUS   SUBMITTED   ERROR");
    expect(out[1]).toMatch(/^ multi\s+-\s+-\s+-\s+-\s+running\s+30 sec ago$/);
    expect(out[2]).toMatch(/^\s+job=0\s+ssh\s+cpu=8 .*gpu-host\s+\$0\s+running\s+30 sec ago$/);
    expect(out[3]).toMatch(/^\s+job=1\s+ssh/);
  });

  it("colours only when asked to", () => {
    const r = [run("a", RunStatus.FAILED, { status: JobStatus.FAILED, terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, exitStatus: 2 })];
    expect(formatRunsTable(r, { now: NOW })).not.toContain("\x1b[");
  });
});

describe("the offers table", () => {
  it("numbers offers, shows availability and how many were left out", () => {
    const offer = (price: number, availability: Availability) =>
      create(OfferSchema, { backend: BackendType.AWS, region: "us-east-1", instance: { name: "p4d.24xlarge", resources: placed.instanceType.resources }, price, availability, blocks: 1, totalBlocks: 1 });
    expect(formatOffersTable([offer(1.5, Availability.AVAILABLE), offer(32.7726, Availability.IDLE)], { total: 5 })).toBe(
      [
        " #  BACKEND          RESOURCES                                  INSTANCE TYPE  PRICE",
        " 1  aws (us-east-1)  cpu=8 mem=32GB disk=200GB gpu=A100:80GB:2  p4d.24xlarge   $1.5",
        " 2  aws (us-east-1)  cpu=8 mem=32GB disk=200GB gpu=A100:80GB:2  p4d.24xlarge   $32.7726  idle",
        "    ...",
        " Shown 2 of 5 offers, $32.7726max",
        "",
      ]
        .join("\n"),
    );
  });
});

describe("plain tables", () => {
  it("pad columns by two spaces after a one-space margin, without trailing spaces", () => {
    expect(renderTable([{ header: "NAME" }, { header: "VALUE" }], [["a", "******"], ["longer-name", ""]])).toBe(" NAME         VALUE\n a            ******\n longer-name\n");
  });
});

describe("dates", () => {
  it("read like dstack's pretty dates", () => {
    const d = (s: number) => prettyDate(new Date(NOW.getTime() - s * 1000), NOW);
    expect([d(3), d(42), d(90), d(600), d(4000), d(3 * 3600), d(86400 + 5), d(3 * 86400), d(15 * 86400), d(100 * 86400), d(800 * 86400)]).toEqual([
      "now",
      "42 sec ago",
      "1 min ago",
      "10 mins ago",
      "1 hour ago",
      "3 hours ago",
      "yesterday",
      "3 days ago",
      "2 weeks ago",
      "3 months ago",
      "2 years ago",
    ]);
  });
});

describe("exit codes", () => {
  it("mirror how an attached run ended", () => {
    expect(exitCodeForRun(run("r", RunStatus.DONE, { status: JobStatus.DONE, exitStatus: 0 }))).toBe(0);
    expect(exitCodeForRun(run("r", RunStatus.FAILED, { status: JobStatus.FAILED, terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, exitStatus: 42 }))).toBe(42);
    expect(exitCodeForRun(run("r", RunStatus.FAILED, { status: JobStatus.FAILED, terminationReason: JobTerminationReason.FAILED_TO_START_DUE_TO_NO_CAPACITY }))).toBe(1);
    expect(exitCodeForRun(run("r", RunStatus.TERMINATED, { status: JobStatus.TERMINATED, terminationReason: JobTerminationReason.TERMINATED_BY_USER }))).toBe(1);
    expect(exitCodeForRun(run("r", RunStatus.TERMINATED, { status: JobStatus.ABORTED, terminationReason: JobTerminationReason.ABORTED_BY_USER }))).toBe(1);
  });

  it("separate usage mistakes (2) from everything else (1)", () => {
    expect(exitCodeForError(new ConfigurationError("f.yml", [{ path: ["x"], message: "bad", line: 1, column: 1 }] as never))).toBe(2);
    expect(exitCodeForError(new DstackError("usage", "bad flag"))).toBe(2);
    expect(exitCodeForError(new DstackError("invalid_argument", "bad name"))).toBe(2);
    expect(exitCodeForError(new DstackError("not_found", "no run"))).toBe(1);
    expect(exitCodeForError(new DstackError("unauthenticated", "bad token"))).toBe(1);
    expect(exitCodeForError(new DstackError("unavailable", "down"))).toBe(1);
    expect(exitCodeForError(new CliError("needs -y", 2))).toBe(2);
    expect(exitCodeForError(new Error("bug"))).toBe(1);
  });
});

describe("the finished message", () => {
  it("says how the run ended and where to look next", () => {
    expect(formatFinishedMessage(run("r", RunStatus.DONE, { status: JobStatus.DONE, statusMessage: "exited (0)" }, { statusMessage: "exited (0)" }))).toEqual({ text: "Exited (0)\n", ok: true });
    const failed = formatFinishedMessage(
      run("r", RunStatus.FAILED, { status: JobStatus.FAILED, terminationReason: JobTerminationReason.CONTAINER_EXITED_WITH_ERROR, exitStatus: 3, terminationReasonMessage: "Traceback: boom" }, { statusMessage: "exited (3)" }),
    );
    expect(failed.ok).toBe(false);
    expect(failed.text).toBe("Exited (3)\nTraceback: boom\nCheck `dstack logs -d r` for more details.\n");
  });
});
