// FleetService → services.fleets.
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { fromProtoConfiguration, toProtoConfiguration, type FleetConfig } from "@dstack/proto";
import { ConfigurationSchema, FleetSchema, FleetSpecSchema, type FleetService, type FleetSpec } from "@dstack/proto/api";
import { err } from "../errors.js";
import type { FleetView } from "../services/fleets.js";
import { withoutSshKeys } from "../services/ssh-fleets.js";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";
import { instanceMessage } from "./instances.js";

function fleetConfig(spec: FleetSpec | undefined): FleetConfig {
  if (!spec?.configuration) throw err("DSTACK_INVALID_RUN_SPEC", { reason: "spec.configuration is required" });
  const c = fromProtoConfiguration(create(ConfigurationSchema, { kind: { case: "fleet", value: spec.configuration } }));
  return c as FleetConfig;
}

function fleetMessage(f: FleetView) {
  const conf = toProtoConfiguration(withoutSshKeys(f.config));
  return create(FleetSchema, {
    id: f.id,
    name: f.name,
    projectName: f.projectName,
    spec: create(FleetSpecSchema, { configuration: conf.kind.case === "fleet" ? conf.kind.value : undefined }),
    createdAt: timestampFromDate(f.createdAt),
    status: f.status,
    instances: f.instances.map(instanceMessage),
    deleted: f.deleted,
  });
}

export function fleetHandlers({ services, settings, serverInfo }: HandlerDeps): Partial<ServiceImpl<typeof FleetService>> {
  const { fleets, sshFleets } = services;
  const endpoint = { agentUrl: settings.agentUrl, caFingerprintSha256: serverInfo.caFingerprintSha256 };
  return {
    listFleets: async (req, ctx) => ({ fleets: (await fleets.list(caller(ctx), req.projectName, { includeDeleted: req.includeDeleted })).map(fleetMessage), nextPageToken: "" }),
    getFleet: async (req, ctx) => ({
      fleet: fleetMessage(await fleets.get(caller(ctx), req.projectName, req.fleet.case === "id" ? { id: req.fleet.value } : { name: req.fleet.value ?? "" })),
    }),
    applyFleet: async (req, ctx) => ({ fleet: fleetMessage(await fleets.apply(caller(ctx), req.projectName, await sshFleets.sealKeys(req.projectName, fleetConfig(req.spec)))) }),
    deleteFleets: async (req, ctx) => {
      await fleets.delete(caller(ctx), req.projectName, req.names);
      return {};
    },
    createFleetJoinToken: async (req, ctx) => {
      const t = await fleets.createJoinToken(caller(ctx), req.projectName, req.fleetName, { ...(req.ttl ? { ttlMs: durationMs(req.ttl) } : {}), maxUses: req.maxUses }, endpoint);
      return { token: t.token, expiresAt: timestampFromDate(t.expiresAt), agentUrl: t.agentUrl, caFingerprintSha256: t.caFingerprintSha256, installCommand: t.installCommand };
    },
  };
}
