// The CLI config file, `~/.dstack/config.yml`, in dstack's format (the same file `dstack server`
// writes):
//   projects:
//   - name: main
//     url: http://127.0.0.1:3000/
//     token: <token>
//     default: true
// Reads resolve which project, server and token a client uses; writes (`dstack project add`,
// `set-default`) merge into the document so comments and unknown keys survive, and the file
// stays 0600 because it holds tokens.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { isMap, isSeq, parseDocument, YAMLMap, YAMLSeq, type Document } from "yaml";
import { DstackError } from "./errors.js";

export interface ProjectConfig {
  name: string;
  url: string;
  token: string;
  default?: boolean;
}

/** `<HOME>/.dstack/config.yml`, with HOME taken from `env` (so tests and sandboxes can move it). */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.HOME || homedir(), ".dstack", "config.yml");
}

function load(path: string): Document {
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new DstackError("config", `Cannot read ${path}: ${(e as Error).message}`);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new DstackError("config", `Cannot read ${path}: ${doc.errors[0]!.message}. Fix or remove the file.`);
  if (doc.contents === null) doc.contents = new YAMLMap() as never;
  if (!isMap(doc.contents)) throw new DstackError("config", `Cannot read ${path}: expected a mapping with a 'projects' list.`);
  return doc;
}

/** The projects in the file, in file order; empty when the file does not exist. */
export function readProjects(path: string): ProjectConfig[] {
  const raw: unknown = load(path).toJS()?.projects;
  if (!Array.isArray(raw)) return [];
  return raw
    .filter((p): p is Record<string, unknown> => typeof p === "object" && p !== null)
    .filter((p) => typeof p.name === "string")
    .map((p) => ({
      name: String(p.name),
      url: typeof p.url === "string" ? p.url : "",
      token: typeof p.token === "string" ? p.token : "",
      ...(p.default === true ? { default: true } : {}),
    }));
}

function save(path: string, doc: Document): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, doc.toString(), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}

function projectsSeq(doc: Document): YAMLSeq {
  const root = doc.contents as YAMLMap;
  const found: unknown = root.get("projects", true);
  if (isSeq(found)) return found;
  const seq = new YAMLSeq();
  root.set("projects", seq);
  return seq;
}

function markDefault(seq: YAMLSeq, entry: YAMLMap): void {
  for (const e of seq.items.filter(isMap) as YAMLMap[]) if (e !== entry) e.delete("default");
  entry.set("default", true);
}

/** Adds the project or updates the entry of the same name; with `makeDefault` it becomes the only default. */
export function upsertProject(path: string, project: Omit<ProjectConfig, "default">, makeDefault: boolean): void {
  const doc = load(path);
  const seq = projectsSeq(doc);
  let entry = (seq.items.filter(isMap) as YAMLMap[]).find((e) => e.get("name") === project.name);
  if (!entry) {
    entry = doc.createNode({ name: project.name }) as YAMLMap;
    seq.items.push(entry);
  }
  entry.set("url", project.url);
  entry.set("token", project.token);
  if (makeDefault) markDefault(seq, entry);
  save(path, doc);
}

/** Makes `name` the default project; false when no such project is configured. */
export function setDefaultProject(path: string, name: string): boolean {
  const doc = load(path);
  const seq = projectsSeq(doc);
  const entry = (seq.items.filter(isMap) as YAMLMap[]).find((e) => e.get("name") === name);
  if (!entry) return false;
  markDefault(seq, entry);
  save(path, doc);
  return true;
}

/** Removes the project's entry; false when it was not there. */
export function removeProject(path: string, name: string): boolean {
  const doc = load(path);
  const seq = projectsSeq(doc);
  const i = seq.items.findIndex((e) => isMap(e) && e.get("name") === name);
  if (i < 0) return false;
  seq.items.splice(i, 1);
  save(path, doc);
  return true;
}

export interface ResolveOptions {
  /** Project name; wins over DSTACK_PROJECT and the config's default. */
  project?: string;
  /** Server URL; wins over DSTACK_SERVER_URL and the project's URL in the config. */
  serverUrl?: string;
  /** User token; wins over DSTACK_TOKEN and the project's token in the config. */
  token?: string;
  /** Where variables (HOME, DSTACK_*) come from; default process.env. */
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedConfig {
  project: string;
  serverUrl: string;
  token: string;
  /** The config file consulted (it may not exist). */
  configPath: string;
}

const SETUP_HINT =
  "Start a server on this machine with `dstack server` (it writes the config), add one with " +
  "`dstack project add --name NAME --url URL --token TOKEN`, or set DSTACK_SERVER_URL, DSTACK_TOKEN and DSTACK_PROJECT.";

/**
 * Which project, server and token to use. Precedence per value: the explicit option, then the
 * DSTACK_* variable, then the config file's entry for the chosen project (the `default: true`
 * one, or the only one, when no project is named). The variables alone are enough: no file needed.
 */
export function resolveConfig(opts: ResolveOptions = {}): ResolvedConfig {
  const env = opts.env ?? process.env;
  const path = configPath(env);
  const wanted = opts.project || env.DSTACK_PROJECT || undefined;
  const projects = readProjects(path);
  const entry = wanted
    ? projects.find((p) => p.name === wanted)
    : (projects.find((p) => p.default) ?? (projects.length === 1 ? projects[0] : undefined));
  const serverUrl = opts.serverUrl || env.DSTACK_SERVER_URL || entry?.url;
  const token = opts.token || env.DSTACK_TOKEN || entry?.token;
  const project = wanted ?? entry?.name;
  if (wanted && !entry && !(opts.serverUrl || env.DSTACK_SERVER_URL)) {
    const known = projects.map((p) => p.name);
    throw new DstackError(
      "config",
      `Project '${wanted}' is not configured in ${path}${known.length ? ` (configured: ${known.join(", ")})` : ""}. ` +
        "Add it with `dstack project add --name NAME --url URL --token TOKEN`, or set DSTACK_SERVER_URL and DSTACK_TOKEN.",
    );
  }
  if (!project || !serverUrl) {
    const why = projects.length > 1 && !wanted ? `${path} lists several projects and none is the default` : `No dstack server is configured (${path})`;
    throw new DstackError("config", `${why}. ${SETUP_HINT}`);
  }
  if (!token) throw new DstackError("config", `No token for project '${project}'. ${SETUP_HINT}`);
  return { project, serverUrl: serverUrl.replace(/\/+$/, ""), token, configPath: path };
}
