"""Adversarial training without a teacher, CIARD's reference points (docs/methods.md's
table): PGD-AT and TRADES as registry entries. Each is a PGD objective (``ablate.core.attacks``)
plus an outer loss over the memoised passes; the loop itself is shared."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ablate.core.catalog import PgdAtParams, TradesParams
from ablate.core.methods.base import Method, Out

if TYPE_CHECKING:
    from ablate.core.passes import Passes


# --- PGD-AT (Madry et al., ICLR 2018) ------------------------------------------------------------

def pgd_at_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
                ) -> Out:
    """L = CE(s(x*), y) (Madry et al. 2018)."""
    ce = F.cross_entropy(passes.s_adv(), y)
    return {"loss": ce, "ce_adv": ce.detach()}


# --- TRADES (Zhang et al., ICML 2019) ------------------------------------------------------------

def trades_loss(passes: Passes, y: torch.Tensor, params: dict[str, Any], state: dict[str, Any]
                ) -> Out:
    """L = CE(f(x), y) + β·KL(f(x*) ‖ f(x)) (TRADES), written as the reference code's
    ``KLDivLoss(sum)(log_softmax(f(x*)), softmax(f(x))) / B``: gradients flow through both f(x*)
    and the target f(x)."""
    s_nat, s_adv = passes.s_nat(), passes.s_adv()
    ce = F.cross_entropy(s_nat, y)
    rob = F.kl_div(F.log_softmax(s_adv, dim=1), F.softmax(s_nat, dim=1), reduction="batchmean")
    return {"loss": ce + params["beta"] * rob, "ce": ce.detach(), "kl_adv": rob.detach()}


PGD_AT = Method(params=PgdAtParams, loss=pgd_at_loss)
TRADES = Method(params=TradesParams, loss=trades_loss)
