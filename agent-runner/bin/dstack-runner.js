#!/usr/bin/env node
// The `dstack-runner` command for development. The workspace runs TypeScript sources directly,
// so this registers tsx's loader first; containers run the esbuild bundle (npm run build:runner).
import { register } from "tsx/esm/api";

register();
await import("../src/entry.ts");
