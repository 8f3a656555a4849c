"""q-FedAvg (Li et al. 2020, "Fair resource allocation in federated learning") weighted by site size.

Flower's QFedAvg weighs every replying site equally; the q-FFL objective it descends,
sum_k p_k F_k^(q+1) / (q+1), weighs site k by its share p_k of the examples, as FedAvg does. With every
site in every round (fedfer's group runs), that weight has to be in the step itself, so q = 0 is exactly
FedAvg and q > 0 moves weight towards the sites the global model serves worst. The sizes are the public
``num-examples`` FedAvg already uses; the losses are the clients' ``global-loss`` (sent only without DP).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import QFedAvg
from flwr.serverapp.strategy.qfedavg import compute_delta_and_h, get_local_weights, get_train_loss


class SizeWeightedQFedAvg(QFedAvg):
    """Flower's QFedAvg with each site's delta and h weighted by p_k = n_k / sum n."""

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        if self.current_arrays is None:
            raise AggregationError("q-FedAvg has no global model for this round: configure_train was not called")
        lipschitz = 1.0 / self.client_learning_rate
        keys = list(self.current_arrays.keys())
        global_weights = self.current_arrays.to_numpy_ndarrays()
        sizes = np.array([float(list(m.content.metric_records.values())[0][self.weighted_by_key]) for m in valid])
        if not np.all(sizes > 0):
            raise AggregationError(f"q-FedAvg: every reply needs a positive {self.weighted_by_key!r} (got {sizes})")
        sum_delta: list[np.ndarray] | None = None
        sum_h = 0.0
        for msg, share in zip(valid, sizes / sizes.sum()):
            delta, h = compute_delta_and_h(global_weights, get_local_weights(msg), self.q, lipschitz,
                                           get_train_loss(msg, self.train_loss_key))
            scaled = [share * d for d in delta]
            sum_delta = scaled if sum_delta is None else [s + d for s, d in zip(sum_delta, scaled)]
            sum_h += share * h
        assert sum_delta is not None
        arrays = [Array(np.asarray(gw - d / sum_h, dtype=gw.dtype)) for gw, d in zip(global_weights, sum_delta)]
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        return ArrayRecord(dict(zip(keys, arrays))), metrics
