// Prints this machine's HostInfo as JSON (proto JSON names, 64-bit numbers as strings);
// warnings go to stderr as JSON lines.
import { toJsonString } from "@bufbuild/protobuf";
import { HostInfoSchema } from "@dstack/proto/agent";
import { collectHostReport } from "./collect.js";

const report = await collectHostReport();
process.stdout.write(`${toJsonString(HostInfoSchema, report.hostInfo, { prettySpaces: 2 })}\n`);
