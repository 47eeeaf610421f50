#!/usr/bin/env node
// The `dstack-shim` command. The workspace runs TypeScript sources directly (no emit step), so the
// entry point registers tsx's loader before importing the shim.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/main.ts");
process.exitCode = await main(process.argv.slice(2));
