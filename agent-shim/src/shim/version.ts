// The shim's version: the package's, reported on enrollment and in every state report.
import { readFileSync } from "node:fs";

export const SHIM_VERSION: string = (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
