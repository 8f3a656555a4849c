"""Screening of clients' updates before aggregation, and the health check of a finished round.

Plain PyTorch (no Flower): the Grid wrapper (:mod:`server.grid`) calls :func:`screen_updates`
on every training round's replies and turns each rejected reply into a recorded error, so the
strategy never averages it; the ServerApp calls :func:`round_failure` after aggregation.

An update is rejected when it holds NaN or infinity, when its tensors do not match the global
model's, or (``max_norm_ratio > 0``) when its norm ``||w_client - w_global||`` exceeds
``max_norm_ratio`` times the round's median update norm (the lower median, so that with two
clients the larger one is compared with the smaller one).
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from typing import Any, Mapping, Sequence

import torch

from fer_models.federation.wire import BUDGET_EXCEEDED
from fer_models.federation.wire import NO_REPLY as NO_REPLY_CODE  # noqa: F401  (re-exported)
from fer_models.federation.wire import UPDATE_REJECTED as REJECTED_CODE  # noqa: F401  (re-exported)

#: Longest client error message quoted in a failed round's summary.
_REASON_CHARS = 400


class RoundFailedError(RuntimeError):
    """A round that did not produce a usable global model; the run stops after the last good round."""


def _problem(*, sent: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    if set(state) != set(sent):
        missing, extra = sorted(set(sent) - set(state)), sorted(set(state) - set(sent))
        return f"its tensors do not match the global model's (missing {missing[:3]}, unexpected {extra[:3]})"
    bad = [k for k, v in state.items() if v.shape != sent[k].shape]
    if bad:
        return f"tensor {bad[0]} has shape {tuple(state[bad[0]].shape)}, the global model's is {tuple(sent[bad[0]].shape)}"
    nonfinite = nonfinite_tensors(state)
    if nonfinite:
        return f"non-finite values (NaN or infinity) in {len(nonfinite)} of {len(state)} tensors, e.g. {nonfinite[0]}"
    return None


def update_norm(*, sent: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of ``state - sent`` over the floating-point tensors."""
    total = 0.0
    for key, value in state.items():
        if value.is_floating_point():
            total += float((value.double() - sent[key].double()).pow(2).sum())
    return math.sqrt(total)


def screen_updates(*, sent: Mapping[str, torch.Tensor], received: Sequence[Mapping[str, torch.Tensor]],
                   max_norm_ratio: float) -> dict[int, str]:
    """``{position in received: reason}`` for every update to reject (empty: all are fine)."""
    rejected: dict[int, str] = {}
    norms: dict[int, float] = {}
    for i, state in enumerate(received):
        problem = _problem(sent=sent, state=state)
        if problem is None:
            norm = update_norm(sent=sent, state=state)
            if math.isfinite(norm):
                norms[i] = norm
            else:
                problem = "its update norm overflows (the weights are too large to be a training step)"
        if problem is not None:
            rejected[i] = problem
    if max_norm_ratio > 0 and len(norms) >= 2:
        median = statistics.median_low(norms.values())
        for i, norm in norms.items():
            if median > 0 and norm > max_norm_ratio * median:
                rejected[i] = (f"its update norm {norm:.4g} is {norm / median:.1f} times the round's median "
                               f"{median:.4g} (max-update-norm-ratio={max_norm_ratio:g})")
    return rejected


def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or infinity."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


_EXCEPTION_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Refusal|Interrupt)): (.+?)\s*$")


def gist(reason: str) -> str:
    """The telling line of a client's error: the innermost ``SomeError: message`` of a (Ray) traceback."""
    found = [m for m in map(_EXCEPTION_LINE.match, reason.splitlines()) if m and m.group(2).strip(" '>")]
    inner = [m for m in found if not m.group(1).endswith("ClientAppException")]
    if inner or found:
        m = (inner or found)[-1]
        kind, message = m.group(1).rsplit(".", 1)[-1], m.group(2).strip(" '>")
        return f"{kind}: {message}"[:_REASON_CHARS]
    return reason.strip()[:_REASON_CHARS]


def summarize_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """The clients' error reasons, identical ones counted once: ``2 clients: <reason>; 1 client: ...``."""
    counts = Counter(gist(str(e.get("reason", ""))) for e in errors)
    return "; ".join(f"{n} client{'s' if n != 1 else ''}: {reason or '(no reason given)'}"
                     for reason, n in counts.most_common())


def round_failure(*, server_round: int, sent: int, trained: int, minimum: int, errors: Sequence[Mapping[str, Any]],
                  state: Mapping[str, torch.Tensor], dp_skipped: bool = False) -> str | None:
    """Why round ``server_round`` failed, or None when it succeeded.

    A round fails when fewer than ``minimum`` (min-train-clients) clients' updates were aggregated,
    or when the aggregated model holds NaN or infinity. Not failures: a round in which every
    sampled client refused because it reached its privacy budget (nothing may be trained), and
    ``dp_skipped``: client-level DP did not release this round (too few replies for its noise, or its
    budget), which the summary records, as long as some client did train or none was asked.
    """
    if errors and all(e.get("code") == BUDGET_EXCEEDED for e in errors) and not trained:
        return None
    if dp_skipped and (trained or not sent):
        return None
    if trained < minimum:
        why = summarize_errors(errors) if errors else "no client was sampled or replied"
        return (f"round {server_round} failed: {trained} of {sent} sampled clients trained, fewer than "
                f"min-train-clients={minimum}; {why}")
    bad = nonfinite_tensors(state)
    if bad:
        return (f"round {server_round} failed: the aggregated model holds NaN or infinity in {len(bad)} "
                f"tensors (e.g. {bad[0]}); lower learning-rate or server-learning-rate")
    return None
