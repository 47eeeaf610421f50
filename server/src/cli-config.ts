// The CLI's config file, ~/.dstack/config.yml, in dstack's format:
//   projects:
//   - name: main
//     url: http://127.0.0.1:3000/
//     token: <token>
//     default: true
// `dstack server` writes its project here so the CLI on the same machine works at once. The
// file may hold other projects (other servers) and keys we do not know: it is merged, never
// replaced, and comments survive. It holds tokens, so it is written 0600, atomically.
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { isMap, isSeq, parseDocument, YAMLMap, YAMLSeq, type Document } from "yaml";

export interface CliProject {
  name: string;
  url: string;
  token: string;
  default?: boolean;
}

/** `<home>/.dstack/config.yml`; `home` defaults to the user's home (`HOME`). */
export function cliConfigPath(home: string = homedir()): string {
  return join(home, ".dstack", "config.yml");
}

function load(path: string): Document {
  const text = existsSync(path) ? readFileSync(path, "utf8") : "";
  const doc = parseDocument(text);
  if (doc.errors.length > 0) throw new Error(`Cannot read ${path}: ${doc.errors[0]!.message}. Fix or remove the file.`);
  if (doc.contents === null) doc.contents = new YAMLMap() as never;
  if (!isMap(doc.contents)) throw new Error(`Cannot read ${path}: expected a mapping with a 'projects' list.`);
  return doc;
}

/** The projects listed in the file (empty when it does not exist). */
export function readCliProjects(path: string): CliProject[] {
  const projects = load(path).toJS()?.projects;
  return Array.isArray(projects) ? (projects as CliProject[]) : [];
}

export type UpsertOutcome = "added" | "updated" | "unchanged";

/**
 * Adds `project` or updates the entry of the same name. With `makeDefault` (the default) it
 * becomes the only `default: true` entry. Other entries and unknown keys are kept.
 */
export function upsertCliProject(path: string, project: Omit<CliProject, "default">, opts: { makeDefault?: boolean } = {}): UpsertOutcome {
  const makeDefault = opts.makeDefault ?? true;
  const doc = load(path);
  const root = doc.contents as YAMLMap;
  const found: unknown = root.get("projects", true);
  let seq: YAMLSeq;
  if (isSeq(found)) seq = found;
  else {
    seq = new YAMLSeq();
    root.set("projects", seq);
  }
  const entries = seq.items.filter(isMap) as YAMLMap[];
  let entry = entries.find((e) => e.get("name") === project.name);
  const before = entry ? JSON.stringify(entry.toJSON()) : undefined;
  const defaultsBefore = JSON.stringify(entries.map((e) => e.get("default") ?? null));
  if (!entry) {
    entry = doc.createNode({ name: project.name }) as YAMLMap;
    seq.items.push(entry);
  }
  entry.set("url", project.url);
  entry.set("token", project.token);
  if (makeDefault) {
    for (const e of seq.items.filter(isMap) as YAMLMap[]) if (e !== entry) e.delete("default");
    entry.set("default", true);
  }
  const outcome: UpsertOutcome = before === undefined ? "added" : before !== JSON.stringify(entry.toJSON()) ? "updated" : "unchanged";
  const defaultsChanged = defaultsBefore !== JSON.stringify(entries.map((e) => e.get("default") ?? null));
  if (outcome === "unchanged" && !defaultsChanged && existsSync(path)) return outcome;
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, doc.toString(), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
  return outcome === "unchanged" ? "updated" : outcome;
}
