// `dstack apply`: validate the configuration, show the plan, ask, upload the code, submit, and
// (unless -d) attach. Fleets apply to the fleet service; volumes and gateways to theirs.
import { readFile } from "node:fs/promises";
import { dirname, resolve, relative } from "node:path";
import type { Command } from "commander";
import { parseConfiguration, parseEnvItem, type AnyConfig, type FleetConfig, type GatewayConfig, type RunConfig, type VolumeConfig } from "@dstack/proto";
import { isRunFinished, type Client } from "../client/client.js";
import { DstackError } from "../client/errors.js";
import { buildCodeArchive, buildFilesArchive, formatBytes } from "../client/code.js";
import { formatConfigurationSummary } from "../format/configuration.js";
import { formatRunPlan, formatSpecDiff } from "../format/plan.js";
import { CliError, confirm, readAll, type CliIO } from "../io.js";
import { ensureSshIdentity } from "../ssh/keys.js";
import { attachToRun, connectOptionsFor } from "./attach.js";
import { applyFleet } from "./fleet-apply.js";
import {
  addResourceFlags,
  applyResourceFlags,
  clientFor,
  collect,
  hasResourceFlags,
  parseCount,
  parseDurationFlag,
  stdoutPalette,
  withProject,
  type ProjectOptions,
  type ResourceFlags,
} from "./common.js";
import { ApplyAction } from "@dstack/proto/api";

interface ApplyOptions extends ProjectOptions, ResourceFlags {
  /** A path, or false for --no-repo. */
  repo?: string | false;
  file?: string;
  yes?: boolean;
  detach?: boolean;
  force?: boolean;
  dryRun?: boolean;
  name?: string;
  env: string[];
  maxOffers?: string;
  maxPrice?: string;
  maxDuration?: string;
}

const DEFAULT_FILE = ".dstack.yml";

export function registerApply(program: Command, io: CliIO, setExit: (code: number) => void): void {
  const cmd = program
    .command("apply")
    .description("apply a configuration: a task, service, dev environment, fleet, volume or gateway")
    .option("-f, --file <path>", `the configuration file (default: ./${DEFAULT_FILE}; - reads standard input, needs -y)`)
    .option("-y, --yes", "do not ask for confirmation")
    .option("-d, --detach", "exit after submitting instead of attaching")
    .option("--force", "re-submit even if an active run of the same name has no changes")
    .option("--dry-run", "validate the configuration and show its summary without contacting the server")
    .option("-n, --name <name>", "override the configuration's name")
    .option("-e, --env <KEY[=VALUE]>", "set an environment variable; KEY alone takes it from this shell (repeatable)", collect, [])
    .option("--max-offers <n>", "number of offers to show in the plan (default 3)")
    .option("--max-price <usd>", "maximum price per hour")
    .option("--max-duration <duration>", "maximum run duration, e.g. 2h, or off")
    .option("-P, --repo <path>", "the directory whose files the run gets (default: the current directory)")
    .option("--no-repo", "do not upload any files");
  addResourceFlags(cmd);
  withProject(cmd);
  cmd.action(async (options: ApplyOptions) => {
    setExit(await apply(options, io));
  });
}

async function apply(options: ApplyOptions, io: CliIO): Promise<number> {
  const { text, displayName } = await loadConfigurationText(options.file, io);
  const configuration = parseConfiguration(text, displayName);
  applyOverrides(configuration, options);
  if (options.dryRun) {
    io.stdout.write(formatConfigurationSummary(configuration, displayName));
    io.stdout.write("Configuration is valid (dry run: nothing submitted).\n");
    return 0;
  }
  if (options.file === "-" && !options.yes) {
    throw new CliError("Reading the configuration from standard input leaves nothing to answer the confirmation with: pass -y.", 2);
  }
  const client = clientFor(io, options);
  switch (configuration.type) {
    case "task":
    case "service":
    case "dev-environment":
      return applyRun(client, configuration, displayName, options, io);
    case "fleet":
      return applyFleet(client, configuration, displayName, options, io);
    case "volume":
    case "gateway":
      return applyNamed(client, configuration, displayName, options, io);
  }
}

function applyOverrides(config: AnyConfig, options: ApplyOptions): void {
  if (options.name) config.name = options.name;
  if (config.type !== "task" && config.type !== "service" && config.type !== "dev-environment") {
    if (hasResourceFlags(options) && config.type === "fleet") config.resources = applyResourceFlags(config.resources, options);
    return;
  }
  if (hasResourceFlags(options)) config.resources = applyResourceFlags(config.resources, options);
  if (options.maxPrice !== undefined) {
    const price = Number(options.maxPrice);
    if (!(price > 0)) throw new CliError(`Invalid --max-price '${options.maxPrice}': expected a positive number of USD per hour`, 2);
    config.maxPrice = price;
  }
  if (options.maxDuration !== undefined) config.maxDuration = options.maxDuration === "off" ? "off" : parseDurationFlag("--max-duration", options.maxDuration);
}

/** `-e` values and the configuration's bare env keys, resolved against this shell's environment. */
function resolveEnv(config: RunConfig, options: ApplyOptions, io: CliIO): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of options.env) {
    const { key, value } = parseEnvItem(item);
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new CliError(`Invalid -e '${item}': expected KEY=VALUE or KEY`, 2);
    const v = value ?? io.env[key];
    if (v === undefined) throw new CliError(`-e ${key}: ${key} is not set in this shell; pass -e ${key}=VALUE`, 2);
    out[key] = v;
  }
  const missing: string[] = [];
  for (const key of config.env.fromCli) {
    if (key in out) continue;
    const v = io.env[key];
    if (v === undefined) missing.push(key);
    else out[key] = v;
  }
  if (missing.length > 0) {
    throw new CliError(
      `The configuration takes ${missing.join(", ")} from the environment, but ${missing.length === 1 ? "it is" : "they are"} not set. ` +
        `Export ${missing.length === 1 ? "it" : "them"} or pass ${missing.map((k) => `-e ${k}=VALUE`).join(" ")}.`,
      2,
    );
  }
  return out;
}

async function applyRun(client: Client, config: RunConfig, displayName: string, options: ApplyOptions, io: CliIO): Promise<number> {
  const p = stdoutPalette(io);
  const env = resolveEnv(config, options, io);
  // commander turns --no-repo into repo === false.
  const repoDir = options.repo === false ? undefined : resolve(io.cwd, typeof options.repo === "string" ? options.repo : ".");
  // The run's containers accept this CLI's key (~/.dstack/ssh/id_rsa, made on first use) for `ssh <run>`.
  const identity = await ensureSshIdentity(io.env);
  // `files:` local paths are relative to the configuration's directory (stdin: this directory).
  const configDir = displayName === "<stdin>" ? io.cwd : dirname(resolve(io.cwd, displayName));
  // The plan compares code and `files:` with an active run's by hash, so it gets them before anything is uploaded.
  const codeArchive = repoDir ? await buildCodeArchive(repoDir) : undefined;
  const codeHash = codeArchive?.hash;
  // With -y nothing is asked: the code (stored by its hash, so an extra upload costs nothing)
  // travels while the server plans. Its error, if any, surfaces where the upload is awaited.
  const earlyUpload = repoDir && options.yes ? client.runs.uploadCode(repoDir, codeArchive) : undefined;
  earlyUpload?.catch(() => {});
  const plannedFiles = [];
  for (const m of config.files) {
    const a = await buildFilesArchive(m, configDir, io.env.HOME);
    plannedFiles.push({ archiveHash: a.hash, path: a.extractTo, localPath: m.localPath, bytes: a.blob.byteLength, uploaded: false });
  }
  const input = {
    configuration: config,
    configurationPath: displayName,
    env,
    sshKeyPub: identity.publicKey,
    ...(repoDir ? { repoDir } : {}),
    ...(codeHash ? { repoCodeHash: codeHash } : {}),
    fileArchives: plannedFiles,
  };
  const maxOffers = options.maxOffers !== undefined ? parseCount("--max-offers", options.maxOffers) : 3;

  const plan = await client.runs.plan(input, { maxOffers: Math.max(maxOffers, 1) });
  const noFleets = (plan.jobPlans[0]?.offers.length ?? 0) === 0 && (await client.fleets.list()).length === 0;
  io.stdout.write(formatRunPlan(plan, config, { configurationPath: displayName, noFleets, palette: p, maxOffers }));

  const name = plan.runSpec?.runName || config.name || "";
  let question = name ? `Submit the run ${name}?` : "Submit a new run?";
  const current = plan.currentResource;
  let stopFirst: string | undefined;
  const diff = formatSpecDiff(plan.changedFields);
  const update = current !== undefined && plan.action === ApplyAction.UPDATE && diff !== null;
  if (update) {
    // dstack's wording: the active run takes the changes in place (services: rolling deployment).
    io.stdout.write(`Active run ${name} already exists. Detected changes that can be updated in-place:\n${diff}\n`);
    question = "Update the run?";
  } else if (current && plan.action === ApplyAction.UPDATE) {
    io.stdout.write(`Active run ${name} already exists. Detected no changes.\n`);
    if (options.yes && !options.force) {
      io.stdout.write("Use --force to apply anyway.\n");
      return 0;
    }
    question = "Stop and override the run?";
    stopFirst = name;
  } else if (current && !isRunFinished(current)) {
    io.stdout.write(`Active run ${name} already exists. Detected changes that cannot be updated in-place:\n${diff ?? ""}\n`);
    question = "Stop and override the run?";
    stopFirst = name;
  }
  if (!(await confirm(io, question, { yes: options.yes ?? false }))) {
    io.stdout.write("\nExiting...\n");
    return 0;
  }
  if (stopFirst) await stopAndWait(client, stopFirst);

  let repoCodeHash: string | undefined;
  if (repoDir) {
    const code = await (earlyUpload ?? client.runs.uploadCode(repoDir, codeArchive));
    repoCodeHash = code.hash;
    if (io.stderr.isTTY) io.stderr.write(p.dim(`Uploaded ${code.files.length} files (${formatBytes(code.bytes)})${code.alreadyExists ? ", unchanged" : ""}\n`));
  }
  const fileArchives = config.files.length > 0 ? await client.runs.uploadFiles(config.files, configDir, io.env.HOME) : [];
  if (io.stderr.isTTY) {
    for (const f of fileArchives) io.stderr.write(p.dim(`Uploaded files ${f.localPath} (${formatBytes(f.bytes)})${f.uploaded ? "" : ", unchanged"}\n`));
  }
  const run = await client.runs.apply(stopFirst ? { ...input, ...(repoCodeHash ? { repoCodeHash } : {}), fileArchives } : plan, {
    ...(repoCodeHash ? { repoCodeHash } : {}),
    fileArchives,
    force: options.force ?? false,
  });
  const runName = run.runSpec?.runName ?? name;
  if (options.detach) {
    io.stdout.write(`Run ${runName} ${update ? "updated" : "submitted"}, detaching...\n`);
    return 0;
  }
  return attachToRun(client, runName, io, {
    onAttached: () => io.stdout.write(`Run ${runName} submitted. Attaching (Ctrl-C detaches; the run goes on)...\n`),
    connect: connectOptionsFor(io, options),
  });
}

async function stopAndWait(client: Client, name: string): Promise<void> {
  await client.runs.stop(name);
  const ac = new AbortController();
  try {
    for await (const u of client.runs.watch([name], { signal: ac.signal, includeJobs: false })) {
      if (u.run && isRunFinished(u.run)) break;
    }
  } finally {
    ac.abort();
  }
}

/** Volumes and gateways: show the summary, ask, create (or update) by name. */
async function applyNamed(client: Client, config: VolumeConfig | GatewayConfig, displayName: string, options: ApplyOptions, io: CliIO): Promise<number> {
  io.stdout.write(formatConfigurationSummary(config, displayName));
  if (!config.name) throw new CliError(`${displayName}: a ${config.type} needs a name (set \`name:\` or pass -n NAME)`, 2);
  if (!(await confirm(io, `Apply the ${config.type} ${config.name}?`, { yes: options.yes ?? false }))) {
    io.stdout.write("\nExiting...\n");
    return 0;
  }
  if (config.type === "volume") {
    const v = await client.volumes.create(config);
    io.stdout.write(`Volume ${v.name || config.name} submitted.\n`);
  } else {
    const g = await client.gateways.apply(config, { force: options.force ?? false });
    io.stdout.write(`Gateway ${g.name || config.name} applied.\n`);
  }
  return 0;
}

async function loadConfigurationText(file: string | undefined, io: CliIO): Promise<{ text: string; displayName: string }> {
  if (file === "-") {
    return { text: await readAll(io.stdin), displayName: "<stdin>" };
  }
  const path = resolve(io.cwd, file ?? DEFAULT_FILE);
  // Name the file as the user would: relative below the working directory, absolute elsewhere.
  const rel = relative(io.cwd, path);
  const displayName = rel && !rel.startsWith("..") ? rel : path;
  try {
    return { text: await readFile(path, "utf8"), displayName };
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") {
      throw new CliError(file ? `${displayName}: no such file` : `No ${DEFAULT_FILE} in ${io.cwd}: pass the configuration with -f FILE`, 2);
    }
    if (code === "EISDIR") throw new CliError(`${displayName}: is a directory, not a configuration file`, 2);
    throw new CliError(`${displayName}: cannot read (${code ?? String(error)})`);
  }
}

export { loadConfigurationText };
