// OfferService → services.offers (`dstack offer`, and `--group-by` GPU groups).
import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { fromProtoResources } from "@dstack/proto";
import { AcceleratorVendor, Availability, GpuOfferGroupSchema, OfferGroupBy, type OfferService } from "@dstack/proto/api";
import { err } from "../errors.js";
import type { GpuGroupView, OfferGroupDim } from "../services/offers.js";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";
import { backendEnum, offerMessage } from "./runs.js";

const DIMS: Partial<Record<OfferGroupBy, OfferGroupDim>> = { [OfferGroupBy.BACKEND]: "backend", [OfferGroupBy.REGION]: "region", [OfferGroupBy.COUNT]: "count" };

/** The group-by list as dimensions; null for no grouping. GPU must be among them (as in dstack). */
function groupDims(groupBy: readonly OfferGroupBy[]): Set<OfferGroupDim> | null {
  const given = groupBy.filter((g) => g !== OfferGroupBy.UNSPECIFIED);
  if (given.length === 0) return null;
  if (!given.includes(OfferGroupBy.GPU)) throw err("DSTACK_BAD_OFFER_GROUP_BY", { reason: "grouping needs 'gpu' among the group-by fields" });
  return new Set(given.flatMap((g) => (DIMS[g] ? [DIMS[g]] : [])));
}

const AVAILABILITY = { idle: Availability.IDLE, available: Availability.AVAILABLE, busy: Availability.BUSY } as const;

function groupMessage(g: GpuGroupView) {
  return create(GpuOfferGroupSchema, {
    name: g.name,
    memoryMib: BigInt(Math.round(g.memoryGb * 1024)),
    vendor: (AcceleratorVendor as unknown as Record<string, AcceleratorVendor>)[g.vendor.toUpperCase()] ?? AcceleratorVendor.NVIDIA,
    countMin: g.countMin,
    countMax: g.countMax,
    price: { min: g.priceMin, max: g.priceMax },
    backends: g.backends.map(backendEnum),
    regions: g.regions,
    availability: AVAILABILITY[g.availability],
    spot: g.spot,
  });
}

export function offerHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof OfferService>> {
  return {
    listOffers: async (req, ctx) => {
      const r = req.requirements;
      const q = {
        resources: fromProtoResources(r?.resources),
        fleets: r?.fleets ?? [],
        ...(r?.maxPrice !== undefined ? { maxPrice: r.maxPrice } : {}),
        includeBusy: req.unallocated || req.fullOffers,
      };
      const dims = groupDims(req.groupBy);
      if (dims) return { offers: [], totalOffers: 0, groups: (await services.offers.listGpuGroups(caller(ctx), req.projectName, q, dims)).map(groupMessage) };
      const { offers, total } = await services.offers.list(caller(ctx), req.projectName, { ...q, maxOffers: req.maxOffers });
      return { offers: offers.map(offerMessage), totalOffers: total, groups: [] };
    },
  };
}
