// InstanceService → services.instances.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { InstanceSchema, type Instance, type InstanceService } from "@dstack/proto/api";
import { err } from "../errors.js";
import type { InstanceView } from "../services/fleets.js";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";
import { backendEnum, resourcesMessage } from "./runs.js";

export function instanceMessage(i: InstanceView): Instance {
  return create(InstanceSchema, {
    id: i.id,
    projectName: i.projectName,
    name: i.name,
    fleetId: i.fleetId ?? "",
    fleetName: i.fleetName ?? "",
    instanceNum: i.instanceNum,
    backend: backendEnum(i.backend),
    // What the host reported (whole host); none until its agent has reported.
    instanceType: typeof i.hostInfo?.cpus === "number" && Array.isArray(i.hostInfo.gpus) ? { name: "", resources: resourcesMessage(i.hostInfo) } : undefined,
    hostname: i.hostInfo?.hostname ?? "",
    internalIp: i.hostInfo?.internalIp ?? "",
    region: i.region,
    price: i.price,
    status: i.status,
    unreachable: i.unreachable,
    terminationReasonMessage: i.terminationReasonMessage ?? "",
    statusMessage: i.statusMessage,
    sshHost: i.sshHost ?? "",
    createdAt: timestampFromDate(i.createdAt),
    totalBlocks: i.totalBlocks,
    busyBlocks: i.busyBlocks,
  });
}

export function instanceHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof InstanceService>> {
  return {
    listInstances: async (req, ctx) => {
      if (req.projectNames.length === 0) throw err("DSTACK_INVALID_RUN_SPEC", { reason: "project_names: name at least one project" });
      const out: Instance[] = [];
      for (const p of req.projectNames) out.push(...(await services.instances.list(caller(ctx), p, { fleetNames: req.fleetNames, onlyActive: req.onlyActive })).map(instanceMessage));
      return { instances: out, nextPageToken: "" };
    },
    getInstance: async (req, ctx) => ({ instance: instanceMessage(await services.instances.get(caller(ctx), req.projectName, req.id)) }),
  };
}
