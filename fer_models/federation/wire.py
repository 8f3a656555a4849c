"""The wire contract between the ClientApp and the ServerApp: message keys and error codes.

Both apps import these names; a string that client and server must agree on lives here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

# --- record names of a message's content (Flower's strategies use the same defaults) ------------------------
ARRAYS_RECORD = "arrays"
METRICS_RECORD = "metrics"
CONFIG_RECORD = "config"

# --- node config keys Flower gives a SuperNode (simulation fills them; deploy-local passes them) -------------
#: The node's partition of the run's dataset (client-data=partition); PARTITION_ID below is the same string, also
#: sent back as a reply metric. A site's own keys (data-path, site, ...) are fer_models.federation.sites.NODE_KEYS.
NODE_PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"

# --- train-config keys the server sends ------------------------------------------------------------
#: The round number as Flower's strategies send it.
SERVER_ROUND = "server-round"
#: Rounds completed before a resume (clients add it to ``server-round``).
ROUND_OFFSET = "round-offset"
#: Random id of the federation, drawn by the server at the start and kept across resumes: a client's
#: privacy ledger belongs to one lineage and continues over every round of it.
LINEAGE = "fedfer-lineage"
#: secure-aggregation=secaggplus: the reply metric a client weights its masked update by (the strategy's own key).
SECAGG_WEIGHT_KEY = "fedfer-secagg-weight-key"
#: strategy=fedprox: the proximal term's weight, as Flower's FedProx sends it.
PROXIMAL_MU = "proximal-mu"

#: Config key of the server's evaluate message asking a site for its held-out counts (federated evaluation).
EVALUATE_COUNTS = "fedfer-evaluate-counts"

# --- reply metrics a client sends ------------------------------------------------------------------------
NUM_EXAMPLES = "num-examples"  # public: the FedAvg weight (documented as released)
#: A constant 1 every client sends: the weight of client-level DP's unweighted mean.
UNIFORM_WEIGHT = "uniform-weight"
EPSILON = "epsilon"
#: 1 when the client's epsilon protects a person (privacy-unit=person with subject ids), 0 for an image.
UNIT_IS_PERSON = "privacy-unit-person"
PARTITION_ID = NODE_PARTITION_ID
#: The training settings each client reports it used (the tuned DP recipe sizes batch and rate per client).
BATCH_SIZE, LEARNING_RATE, MAX_GRAD_NORM, EMA_DECAY = CLIENT_SETTINGS = (
    "batch-size", "learning-rate", "max-grad-norm", "ema-decay")
#: The learning rate of this round (after the schedule) and 1 when the optimizer state carried over from the last.
ROUND_LEARNING_RATE = "round-learning-rate"
OPTIMIZER_STATE_CARRIED = "optimizer-state-carried"
#: Under dp=sample: the noise multiplier, the Poisson sample rate and the DP steps of the whole history.
NOISE_MULTIPLIER, SAMPLE_RATE, DP_STEPS = "noise-multiplier", "sample-rate", "dp-steps"
#: Everything a client may send under DP (or under secure aggregation) besides its arrays: each is public (derived
#: from the run config, the node's public counts and the public example count) or accounted (epsilon). Under
#: privacy-unit=person the count of persons is private: "sample-rate", "dp-steps", the noise multiplier (target-epsilon
#: mode) and epsilon are computed from a public count instead (the node's ``public-person-count``, else the public
#: number of training samples), never from the persons counted in the data. docs/privacy.md "Privacy guarantees" lists them.
PUBLIC_DP_METRICS = frozenset({
    PARTITION_ID, NUM_EXAMPLES, UNIFORM_WEIGHT, EPSILON, UNIT_IS_PERSON, NOISE_MULTIPLIER, SAMPLE_RATE, DP_STEPS,
    *CLIENT_SETTINGS, ROUND_LEARNING_RATE, OPTIMIZER_STATE_CARRIED})
#: Reply metrics computed from private data, sent only without DP (they are not accounted).
TRAIN_LOSS, TRAIN_ACCURACY, SAMPLES_SEEN, TRAIN_SECONDS = TRAIN_STATISTICS = (
    "train-loss", "train-accuracy", "samples-seen", "train-seconds")
#: The client's whole train handler in seconds (data lookup, model set-up, training, the reply's arrays): with
#: train-seconds it splits a round's time (benchmarks/framework_overhead.py); sent only with TRAIN_STATISTICS.
ROUND_SECONDS = "round-seconds"
#: strategy=qfedavg: the received global model's mean loss on the client's training data, computed before local
#: training (q-FedAvg's F_k(w)); like TRAIN_STATISTICS it is private and sent only without DP.
GLOBAL_LOSS = "global-loss"

#: Client-side evaluation reply (fraction-evaluate > 0, without DP): the client's share of the validation split.
EVAL_LOSS = "eval-loss"
EVAL_ACCURACY = "eval-accuracy"

#: Federated evaluation reply (a site's held-out split under the global model): the 7x7 confusion counts
#: (row-major, rows = true class), the summed loss, the example count, faces found / fallbacks of the crop.
#: A release the site opts into (node config share-evaluation=true); never sent under DP.
EVAL_CONFUSION = "eval-confusion"
EVAL_LOSS_SUM = "eval-loss-sum"
EVAL_N = "eval-n"
EVAL_FACES_FOUND = "eval-faces-found"
EVAL_FACE_FALLBACKS = "eval-face-fallbacks"
#: The config record of a federated evaluation reply, with the site's (public) name under SITE_NAME.
SITE_RECORD = "site"
SITE_NAME = "name"

# --- error codes of client replies (and of replies the server rejects) ----------------------------------
#: The client refuses the round: training would exceed its epsilon budget.
BUDGET_EXCEEDED = 4701
#: The client refuses to train: it has trained in this lineage before but its ledger is gone.
LEDGER_MISSING = 4702
#: The server rejected the reply: its epsilon is lower than the one recorded for that client.
LEDGER_REGRESSION = 4703
#: The client refuses client-side evaluation under DP (its counts would not be accounted).
PRIVATE_EVALUATION_REFUSED = 4704
#: The site's data could not be used (missing, empty, unreadable, labels outside the 7 classes).
SITE_DATA_ERROR = 4705
#: The site did not opt into sharing evaluation counts of its held-out split (share-evaluation=false).
EVALUATION_NOT_SHARED = 4706
#: The server refused to aggregate the update (non-finite, shape mismatch, outlier norm).
UPDATE_REJECTED = 4801
#: secure-aggregation=secaggplus: the client refuses a train message that would send its update unmasked.
SECAGG_REQUIRED = 4707
#: secure-aggregation=secaggplus: the client cannot mask its update (a weight over secagg-max-weight, ...).
SECAGG_CLIENT_FAILED = 4708
#: The server's SecAgg+ round halted (fewer clients than the reconstruction threshold left): nothing was aggregated.
SECAGG_HALTED = 4802
#: The node's own config (its privacy keys: epsilon-cap, min-noise-multiplier, ...) is invalid.
NODE_CONFIG_ERROR = 4709
#: Recorded for a sampled client that did not reply (timeout or dropout).
NO_REPLY = -1
#: The server ignored a reply whose metrics break this contract (a key missing or of the wrong type).
MALFORMED_REPLY = 4803
#: Codes that mean "a privacy rule stopped this client", recorded as refusals in the run record.
PRIVACY_REFUSALS = (BUDGET_EXCEEDED, LEDGER_MISSING, LEDGER_REGRESSION)

#: The one reason a client sends with each error code of its own: fixed text, never built from the site's data, paths,
#: labels, counts or settings (a reason reaches the server and its run folder). The detailed message goes to the
#: node's own log only.
CLIENT_REASONS = {
    BUDGET_EXCEEDED: "privacy budget exhausted: this site's privacy limits (epsilon budget, epsilon cap or minimum "
                     "noise) refuse this round; see the node's log",
    LEDGER_MISSING: "privacy ledger missing, unreadable or from another lineage: this site refuses to train until it "
                    "is restored; see the node's log for how",
    PRIVATE_EVALUATION_REFUSED: "client-side evaluation refused under DP (its metrics are not accounted)",
    SITE_DATA_ERROR: "site data unusable: see the node's log",
    EVALUATION_NOT_SHARED: "this client does not share evaluation results; see the node's log",
    NODE_CONFIG_ERROR: "the node's config is invalid: see the node's log",
}


# --- typed replies: what a client builds its reply metrics through, and the server reads them through ------------
class MalformedReplyError(ValueError):
    """A reply's metrics break the wire contract: a required key is missing or a value has the wrong type."""

    def __init__(self, *, kind: str, key: str, problem: str) -> None:
        self.key = key
        super().__init__(f"{kind} reply metric {key!r} {problem}: the client and the server disagree on the wire "
                         f"contract (fer_models/federation/wire.py); run the same fedfer version on both")


_INT, _NUMBER = "an integer", "a number"


def _checked(kind: str, key: str, value: Any, expected: str) -> float | int:
    ok = isinstance(value, int) if expected == _INT else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise MalformedReplyError(kind=kind, key=key,
                                  problem=f"is {type(value).__name__} {value!r}, expected {expected}")
    return value


def _read(cls: Any, kind: str, metrics: Mapping[str, Any]) -> Any:
    values: dict[str, Any] = {}
    for f in fields(cls):
        key = f.metadata.get("key")
        if key is None:
            continue
        if key not in metrics:
            if f.metadata.get("required"):
                raise MalformedReplyError(kind=kind, key=key, problem="is missing")
            continue
        values[f.name] = _checked(kind, key, metrics[key], f.metadata["type"])
    known = {f.metadata["key"] for f in fields(cls) if "key" in f.metadata}
    return cls(**values, extra={k: v for k, v in metrics.items() if k not in known})


def _write(reply: Any) -> dict[str, float | int]:
    out = {f.metadata["key"]: getattr(reply, f.name) for f in fields(reply)
           if "key" in f.metadata and getattr(reply, f.name) is not None}
    return {**out, **reply.extra}


def _key(key: str, expected: str, *, required: bool = False) -> Any:
    return field(default=None, metadata={"key": key, "type": expected, "required": required})


@dataclass(frozen=True, kw_only=True)
class TrainReply:
    """A train reply's metrics (``MetricRecord`` under :data:`METRICS_RECORD`), keys in the order they are sent.

    Only ``num-examples`` is required; every other key is sent when it applies (DP, no DP, q-FedAvg, ...).
    ``extra`` keeps keys this contract does not name (e.g. the ``node_id`` the server's grid adds), so a round trip
    through :meth:`from_metrics` and :meth:`to_metrics` changes nothing."""

    partition_id: int | None = _key(PARTITION_ID, _INT)
    batch_size: float | None = _key(BATCH_SIZE, _NUMBER)
    learning_rate: float | None = _key(LEARNING_RATE, _NUMBER)
    max_grad_norm: float | None = _key(MAX_GRAD_NORM, _NUMBER)
    ema_decay: float | None = _key(EMA_DECAY, _NUMBER)
    round_learning_rate: float | None = _key(ROUND_LEARNING_RATE, _NUMBER)
    optimizer_state_carried: int | None = _key(OPTIMIZER_STATE_CARRIED, _INT)
    epsilon: float | None = _key(EPSILON, _NUMBER)
    unit_is_person: int | None = _key(UNIT_IS_PERSON, _INT)
    noise_multiplier: float | None = _key(NOISE_MULTIPLIER, _NUMBER)
    sample_rate: float | None = _key(SAMPLE_RATE, _NUMBER)
    dp_steps: float | None = _key(DP_STEPS, _NUMBER)
    num_examples: int = field(metadata={"key": NUM_EXAMPLES, "type": _INT, "required": True})
    uniform_weight: int | None = _key(UNIFORM_WEIGHT, _INT)
    train_loss: float | None = _key(TRAIN_LOSS, _NUMBER)
    train_accuracy: float | None = _key(TRAIN_ACCURACY, _NUMBER)
    samples_seen: float | None = _key(SAMPLES_SEEN, _NUMBER)
    train_seconds: float | None = _key(TRAIN_SECONDS, _NUMBER)
    global_loss: float | None = _key(GLOBAL_LOSS, _NUMBER)
    round_seconds: float | None = _key(ROUND_SECONDS, _NUMBER)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> "TrainReply":
        """The reply read from its metrics; :class:`MalformedReplyError` names the first key that is wrong."""
        return _read(cls, "train", metrics)

    def to_metrics(self) -> dict[str, float | int]:
        """The metrics to send (the keys that apply, in the contract's order, then ``extra``)."""
        return _write(self)

    @property
    def settings(self) -> dict[str, float]:
        """The training settings the client reports it used (:data:`CLIENT_SETTINGS`, those it sent)."""
        metrics = self.to_metrics()
        return {k: metrics[k] for k in CLIENT_SETTINGS if k in metrics}


@dataclass(frozen=True, kw_only=True)
class EvalReply:
    """A client-side evaluation reply's metrics (fraction-evaluate > 0, without DP): its share's size, loss and
    accuracy, all three required."""

    num_examples: int = field(metadata={"key": NUM_EXAMPLES, "type": _INT, "required": True})
    loss: float = field(metadata={"key": EVAL_LOSS, "type": _NUMBER, "required": True})
    accuracy: float = field(metadata={"key": EVAL_ACCURACY, "type": _NUMBER, "required": True})
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Mapping[str, Any]) -> "EvalReply":
        return _read(cls, "evaluate", metrics)

    def to_metrics(self) -> dict[str, float | int]:
        return _write(self)
