"""The wire contract between the ClientApp and the ServerApp: message keys and error codes.

Both apps import these names; a string that client and server must agree on lives here only.
"""

from __future__ import annotations

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

#: Config key of the server's evaluate message asking a site for its held-out counts (federated evaluation).
EVALUATE_COUNTS = "fedfer-evaluate-counts"

# --- reply metrics a client sends ------------------------------------------------------------------------
NUM_EXAMPLES = "num-examples"  # public: the FedAvg weight (documented as released)
#: A constant 1 every client sends: the weight of client-level DP's unweighted mean.
UNIFORM_WEIGHT = "uniform-weight"
EPSILON = "epsilon"
#: 1 when the client's epsilon protects a person (privacy-unit=person with subject ids), 0 for an image.
UNIT_IS_PERSON = "privacy-unit-person"
PARTITION_ID = "partition-id"
#: The training settings each client reports it used (the tuned DP recipe sizes batch and rate per client).
CLIENT_SETTINGS = ("batch-size", "learning-rate", "max-grad-norm", "ema-decay")
#: Everything a client may send under DP (or under secure aggregation) besides its arrays: each is public (derived
#: from the run config, the node's public counts and the public example count) or accounted (epsilon). Under
#: privacy-unit=person the count of persons is private: "sample-rate", "dp-steps", the noise multiplier (target-epsilon
#: mode) and epsilon are computed from a public count instead (the node's ``public-person-count``, else the public
#: number of training samples), never from the persons counted in the data. README "Privacy guarantees" lists them.
PUBLIC_DP_METRICS = frozenset({
    PARTITION_ID, NUM_EXAMPLES, UNIFORM_WEIGHT, EPSILON, UNIT_IS_PERSON, "noise-multiplier", "sample-rate", "dp-steps",
    *CLIENT_SETTINGS, "round-learning-rate", "optimizer-state-carried"})
#: Reply metrics computed from private data, sent only without DP (they are not accounted).
TRAIN_STATISTICS = ("train-loss", "train-accuracy", "samples-seen", "train-seconds")
#: The client's whole train handler in seconds (data lookup, model set-up, training, the reply's arrays): with
#: train-seconds it splits a round's time (benchmarks/framework_overhead.py); sent only with TRAIN_STATISTICS.
ROUND_SECONDS = "round-seconds"
#: strategy=qfedavg: the received global model's mean loss on the client's training data, computed before local
#: training (q-FedAvg's F_k(w)); like TRAIN_STATISTICS it is private and sent only without DP.
GLOBAL_LOSS = "global-loss"

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
