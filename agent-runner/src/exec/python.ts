// `python: "3.x"`: dstack builds a uv venv of that version in its own image. Here the runner works
// with what the image has: the image's `python3.x` becomes `python` and `python3` (and `pip3.x`,
// when present, `pip` and `pip3`) through a directory of links put first on the job's PATH.
// An image without that interpreter fails the job before the commands run, naming the version.
import { accessSync, constants, mkdirSync, readdirSync, rmSync, statSync, symlinkSync } from "node:fs";
import { join } from "node:path";

export class PythonError extends Error {
  override name = "PythonError";
}

/** Where the links go unless the caller says otherwise. */
export const PYTHON_SHIM_DIR = "/dstack/python/bin";

function executable(p: string): boolean {
  try {
    if (!statSync(p).isFile()) return false;
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

const dirsOf = (path: string) => path.split(":").filter((d) => d.length > 0);

/** `python3.N` interpreters on PATH, first hit per version, for the error message. */
export function pythonsOnPath(path: string, except?: string): string[] {
  const seen = new Set<string>();
  for (const dir of dirsOf(path)) {
    if (dir === except) continue;
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const n of names) if (/^python3\.\d+$/.test(n) && executable(join(dir, n))) seen.add(n.slice("python".length));
  }
  return [...seen].sort((a, b) => Number(a.split(".")[1]) - Number(b.split(".")[1]));
}

/**
 * Makes `python`/`python3` the image's `python<version>` and returns the job's new PATH (the link
 * directory first). Throws a PythonError naming the version when the image does not have it.
 */
export function selectPython(version: string, path: string, shimDir = PYTHON_SHIM_DIR): { path: string; interpreter: string } {
  const v = version.trim();
  if (!/^3\.\d{1,2}$/.test(v)) throw new PythonError(`python: ${JSON.stringify(version)} is not a Python version like "3.12"`);
  const name = `python${v}`;
  const dirs = dirsOf(path).filter((d) => d !== shimDir);
  const dir = dirs.find((d) => executable(join(d, name)));
  if (!dir) {
    const found = pythonsOnPath(path, shimDir);
    throw new PythonError(
      `python ${v} was requested (python: "${v}"), but the image has no ${name} on PATH` +
        (found.length ? ` (it has ${found.map((f) => `python${f}`).join(", ")})` : " (it has no python3.x at all)") +
        `; pick one of those, or an image with Python ${v}`,
    );
  }
  const interpreter = join(dir, name);
  rmSync(shimDir, { recursive: true, force: true });
  mkdirSync(shimDir, { recursive: true, mode: 0o755 });
  for (const link of ["python", "python3"]) symlinkSync(interpreter, join(shimDir, link));
  const pip = dirs.map((d) => join(d, `pip${v}`)).find(executable);
  if (pip) for (const link of ["pip", "pip3"]) symlinkSync(pip, join(shimDir, link));
  return { path: [shimDir, ...dirs].join(":"), interpreter };
}
