// parseConfiguration: YAML text → the normalized configuration, or a ConfigurationError whose
// issues carry the line and column of the offending key or value.
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Node } from "yaml";
import * as z from "zod";
import { closestMatch, ConfigurationError, type ConfigurationIssue, type IssuePath } from "./errors.js";
import { CONFIGURATION_TYPES, configurationSchemas, UNKNOWN_FIELD } from "./schema.js";
import type { AnyConfig } from "./types.js";

interface Located {
  line: number;
  column: number;
}

/** Finds the YAML node for `path`: the key node when `atKey`, else the value; the deepest existing node otherwise. */
function locate(root: Node | null | undefined, path: IssuePath, atKey: boolean, lc: LineCounter): Located {
  let node: unknown = root;
  let keyNode: unknown = undefined;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i];
    let next: unknown = undefined;
    let nextKey: unknown = undefined;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && (isScalar(p.key) ? String(p.key.value) : String(p.key)) === String(seg));
      if (pair) {
        next = pair.value ?? pair.key;
        nextKey = pair.key;
      }
    } else if (isSeq(node) && typeof seg === "number") {
      next = node.items[seg];
    }
    if (next === undefined) break;
    node = next;
    keyNode = nextKey;
    if (i === path.length - 1 && atKey && nextKey) node = nextKey;
  }
  // An empty value (`key:`) has no useful range of its own; point at its key.
  if (isScalar(node) && node.value === null && keyNode && !atKey) node = keyNode;
  const range = (node as { range?: [number, number, number] } | undefined)?.range;
  const offset = range ? range[0] : 0;
  const pos = lc.linePos(offset);
  return { line: pos.line, column: pos.col };
}

const typeName = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "a list" : typeof v === "object" ? "a mapping" : `${typeof v} ${JSON.stringify(v)}`);

/**
 * Parses a `.dstack.yml` document. Returns the normalized configuration with dstack's defaults
 * applied, or throws ConfigurationError listing every problem with its line and column.
 */
export function parseConfiguration(yamlText: string, fileName: string): AnyConfig {
  const lc = new LineCounter();
  const doc = parseDocument(yamlText, { lineCounter: lc, prettyErrors: false, uniqueKeys: true, strict: true });
  const at = (offset: number): Located => {
    const p = lc.linePos(offset);
    return { line: p.line, column: p.col };
  };
  if (doc.errors.length > 0) {
    throw new ConfigurationError(
      fileName,
      doc.errors.map((e) => ({ path: [], ...at(e.pos[0]), message: `YAML syntax error: ${e.message.split("\n")[0]}` })),
    );
  }
  let data: unknown;
  try {
    data = doc.toJS({ maxAliasCount: 100 });
  } catch (e) {
    throw new ConfigurationError(fileName, [{ path: [], line: 1, column: 1, message: `YAML error: ${(e as Error).message}` }]);
  }
  const root = doc.contents;
  const issue = (path: IssuePath, message: string, atKey = false): ConfigurationIssue => ({ path, ...locate(root, path, atKey, lc), message });

  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new ConfigurationError(fileName, [issue([], `A configuration must be a mapping with a \`type\` field, not ${typeName(data)}`)]);
  }
  const record = data as Record<string, unknown>;
  const type = record.type;
  if (type === undefined || type === null) {
    throw new ConfigurationError(fileName, [issue([], `Missing \`type\`; expected one of: ${CONFIGURATION_TYPES.join(", ")}`)]);
  }
  if (typeof type !== "string" || !(CONFIGURATION_TYPES as readonly string[]).includes(type)) {
    const guess = typeof type === "string" ? closestMatch(type, CONFIGURATION_TYPES) : undefined;
    const hint = guess ? `; did you mean \`${guess}\`?` : "";
    const extra = type === "preset" ? " (`type: preset` is not supported)" : "";
    throw new ConfigurationError(fileName, [issue(["type"], `Unknown configuration type ${JSON.stringify(type)}${extra}; expected one of: ${CONFIGURATION_TYPES.join(", ")}${hint}`)]);
  }
  const schema = configurationSchemas[type as keyof typeof configurationSchemas];
  const result = schema.safeParse(record);
  if (result.success) return result.data;
  throw new ConfigurationError(fileName, toIssues(result.error, issue));
}

function toIssues(error: z.ZodError, issue: (path: IssuePath, message: string, atKey?: boolean) => ConfigurationIssue): ConfigurationIssue[] {
  const out: ConfigurationIssue[] = [];
  const seen = new Set<string>();
  const visit = (i: z.core.$ZodIssue, prefix: IssuePath) => {
    const path = [...prefix, ...(i.path as IssuePath)];
    if (i.code === "invalid_union" && i.errors.length > 0) {
      // Report the branch that got furthest (the one with the deepest issue).
      const best = [...i.errors].sort((a, b) => Math.max(...b.map((x) => x.path.length)) - Math.max(...a.map((x) => x.path.length)))[0]!;
      for (const sub of best) visit(sub, path);
      return;
    }
    if (i.code === "unrecognized_keys") {
      for (const key of i.keys) push([...path, key], `${UNKNOWN_FIELD} \`${key}\``, true);
      return;
    }
    let message = i.message;
    const last = path[path.length - 1];
    if ((i.code === "invalid_type" && /received undefined/.test(message)) || message === "Field required") {
      message = typeof last === "string" ? `Missing required field \`${last}\`` : "Field required";
    }
    push(path, message, message.startsWith(UNKNOWN_FIELD));
  };
  const push = (path: IssuePath, message: string, atKey: boolean) => {
    const key = JSON.stringify(path) + message;
    if (seen.has(key)) return;
    seen.add(key);
    out.push(issue(path, message, atKey));
  };
  for (const i of error.issues) visit(i, []);
  return out;
}
