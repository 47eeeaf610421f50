// OfferService → services.offers (`dstack offer`).
import type { ServiceImpl } from "@connectrpc/connect";
import { fromProtoResources } from "@dstack/proto";
import type { OfferService } from "@dstack/proto/api";
import { caller } from "./context.js";
import type { HandlerDeps } from "./deps.js";
import { offerMessage } from "./runs.js";

export function offerHandlers({ services }: HandlerDeps): Partial<ServiceImpl<typeof OfferService>> {
  return {
    listOffers: async (req, ctx) => {
      const r = req.requirements;
      const { offers, total } = await services.offers.list(caller(ctx), req.projectName, {
        resources: fromProtoResources(r?.resources),
        fleets: r?.fleets ?? [],
        ...(r?.maxPrice !== undefined ? { maxPrice: r.maxPrice } : {}),
        includeBusy: req.unallocated || req.fullOffers,
        maxOffers: req.maxOffers,
      });
      return { offers: offers.map(offerMessage), totalOffers: total, groups: [] };
    },
  };
}
