"""Client mod for secure-aggregation=secaggplus: the update leaves only masked, as Flower's SecAgg+ sends it.

Flower's ``secaggplus_mod`` runs the four protocol stages (keys, key shares, masked vector, unmask
shares); it reads the training reply in the legacy ``FitRes`` layout. This mod is the adapter:
it gives the mod the *update* (trained weights minus the received global model; the server adds the
unmasked mean back) with this client's public aggregation weight, and hands the inner ClientApp the
message-API message it expects. What the reply keeps besides the masked vector is its public
metrics (fer_models/federation/wire.py); its arrays are emptied by Flower's mod. Without secure aggregation
the mod passes messages through; under it, a train message without SecAgg+ stage is refused.

Masks: Flower's mod expands each mask seed with a 32-bit NumPy seed (the XOR of the key's words),
which a server can search; at import this module replaces the mod's ``pseudo_rand_gen`` with
fedfer's AES-256-CTR expansion keyed by the whole seed (fer_models/privacy/secagg_prg.py). server/secagg.py
does the same to the server workflow, so both ends derive the same masks.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np
from flwr.app import ArrayRecord, Context, Error, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.client.mod import secaggplus_mod
from flwr.client.mod.secure_aggregation.secaggplus_mod import SecAggPlusState
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.compat.common import recorddict_compat as compat

from fer_models.config import RunConfig
from fer_models.federation.wire import (
    ARRAYS_RECORD,
    CONFIG_RECORD,
    METRICS_RECORD,
    SECAGG_CLIENT_FAILED,
    SECAGG_REQUIRED,
    SECAGG_WEIGHT_KEY,
)
from fer_models.privacy import secagg_prg

logger = logging.getLogger(__name__)

# Flower's mod imported pseudo_rand_gen by name: its masks would come from a 32-bit seed the server can
# scan after a dropout (fer_models/privacy/secagg_prg.py). Replace that name in the mod's own module (the package
# attribute of the same name is the mod function, hence importlib), before any mask is drawn.
secagg_prg.install(target=importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod"))


class _NoMaskedUpdate(Exception):
    """The inner app replied with an error, or the update cannot be masked: reply with this error instead."""

    def __init__(self, error: Error) -> None:
        super().__init__(error.reason)
        self.error = error


def secure_aggregation(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run Flower's SecAgg+ stages on train messages when ``secure-aggregation=secaggplus``."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, context)
    cfg = RunConfig.from_flat(context.run_config)
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        if cfg.secure_aggregation != "none":
            return Message(Error(code=SECAGG_REQUIRED, reason=f"secure-aggregation={cfg.secure_aggregation}: this "
                                 f"client sends its update only masked (SecAgg+), not in a plain train message"),
                           reply_to=msg)
        return call_next(msg, context)
    if msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) != Stage.COLLECT_MASKED_VECTORS:
        return secaggplus_mod(msg, context, call_next)  # key stages: the protocol alone, no training
    try:
        return secaggplus_mod(msg, context, _update_as_fitres(msg, call_next))
    except _NoMaskedUpdate as refusal:
        logger.warning("secure aggregation: no masked update this round: %s", refusal)
        return Message(refusal.error, reply_to=msg)


def _update_as_fitres(msg: Message, call_next: ClientAppCallable) -> ClientAppCallable:
    """The inner app, seen by Flower's mod: the message-API train call, its reply as a FitRes of the update."""
    config = msg.content[CONFIG_RECORD]
    weight_key = str(config[SECAGG_WEIGHT_KEY])  # type: ignore[index]
    received = msg.content[ARRAYS_RECORD]

    def train(inner: Message, context: Context) -> Message:
        # the inner app sees what it would without SecAgg+: one ArrayRecord, one ConfigRecord
        inner.content = RecordDict({k: v for k, v in inner.content.items() if k != RECORD_KEY_CONFIGS})
        reply = call_next(inner, context)
        if reply.has_error():
            raise _NoMaskedUpdate(reply.error)
        metrics = dict(reply.content[METRICS_RECORD])  # type: ignore[arg-type]
        update = masked_update_input(trained=reply.content[ARRAYS_RECORD], received=received)  # type: ignore[arg-type]
        weight = metrics.get(weight_key, 0)
        _check_fits(update, weight=weight, key=weight_key, context=context)
        fitres = FitRes(status=Status(code=Code.OK, message=""), parameters=ndarrays_to_parameters(update),
                        num_examples=int(weight), metrics=metrics)  # type: ignore[arg-type]
        return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=inner)

    return train


def masked_update_input(*, trained: ArrayRecord, received: ArrayRecord) -> list[np.ndarray]:
    """The update SecAgg+ masks: trained minus received, array by array, in the global model's order."""
    if list(trained.keys()) != list(received.keys()):
        raise _NoMaskedUpdate(Error(code=SECAGG_CLIENT_FAILED, reason="the trained model's arrays differ from the "
                                    "received global model's; nothing to mask"))
    out = []
    for name, new, old in zip(trained.keys(), trained.to_numpy_ndarrays(), received.to_numpy_ndarrays()):
        if not np.issubdtype(new.dtype, np.floating):
            raise _NoMaskedUpdate(Error(code=SECAGG_CLIENT_FAILED, reason=f"array {name!r} is {new.dtype}: SecAgg+ "
                                        f"quantizes floating-point updates only"))
        out.append(new.astype(np.float64) - old.astype(np.float64))
    return out


def _check_fits(update: list[np.ndarray], *, weight: float, key: str, context: Context) -> None:
    """Refuse a weight above the round's max weight (it would overflow the quantized sum); warn, in this
    client's own log only, when entries of the weighted update will be clipped to the clipping range."""
    state = SecAggPlusState(**context.state.config_records[RECORD_KEY_STATE])
    if weight > state.max_weight or weight != int(weight) or weight <= 0:
        raise _NoMaskedUpdate(Error(code=SECAGG_CLIENT_FAILED, reason=(
            f"aggregation weight {key}={weight} is not a positive integer <= the round's max weight "
            f"{state.max_weight:g}: set secagg-max-weight to at least the largest client's {key}")))
    largest = max(float(np.abs(u).max(initial=0.0)) for u in update) * weight / state.max_weight
    if largest > state.clipping_range:
        logger.warning("secure aggregation: weighted update entries up to %.3g are clipped to +-%g before masking; "
                       "raise secagg-clipping-range", largest, state.clipping_range)
