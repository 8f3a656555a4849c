"""The one typed, frozen run configuration.

Every run setting has a kebab-case key (the same keys as ``[tool.flwr.app.config]`` in
``pyproject.toml``, ``flwr run --run-config`` and ``fedfer simulate --set``). The defaults here are
the single source of truth; a test checks that ``pyproject.toml`` carries the same values.
The config is parsed once, at the edge (ServerApp, ClientApp, CLI), and passed down typed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from fer_models.common.labels import NUM_CLASSES
from fer_models.config.dp_checks import check_privacy_settings
from fer_models.config.dp_trust import DP_CLIENT_TRUST, DP_SAMPLE_TRUST
from fer_models.config.errors import ConfigError
from fer_models.config.recipe import RECIPE_KEYS, TUNED
from fer_models.config.secagg_checks import check_secure_aggregation

ConfigValue = bool | int | float | str
#: server-learning-rate = 0 resolves to the strategy's default (Flower's FedAvgM default; fedfer's measured one for
#: the adaptive optimizers: docs/convergence.md).
SERVER_LR_DEFAULTS = {"fedavgm": 1.0, "fedadam": 0.01, "fedyogi": 0.01}


def _opt(default: ConfigValue, help: str, *, choices: tuple[str, ...] = (), minimum: float | None = None,
         maximum: float | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "min": minimum, "max": maximum})


@dataclass(frozen=True)
class RunConfig:
    """All settings of one fedfer run. Build it with :meth:`from_flat`; it never changes after."""

    # --- run and data -----------------------------------------------------------------------
    run_name: str = _opt("fedfer", "name of the run; the run folder is runs/<name>-<timestamp>")
    seed: int = _opt(0, "seed for data generation, partitioning, model init and sampling", minimum=0)
    data_path: str = _opt("", "dataset path (FER2013 CSV or folder, CK+, JAFFE, manifest CSV, a folder of expression "
                          "sequences), or several as "
                          "name=path,name=path (one group each); empty = embedded synthetic faces")
    data_format: str = _opt("auto", "dataset format", choices=("auto", "csv", "folder", "ckplus", "jaffe",
                                                               "manifest", "sequences", "synthetic"))
    leave_out_group: str = _opt("", "with several datasets: train without this group and report the model on it")
    client_data: str = _opt("partition", "what each client trains on: 'partition' = part partition-id of the run's "
                            "data-path (simulation, trials); 'site' = its own site's data, the data-path (data-format, "
                            "site, face-crop, share-evaluation) of its node config; in simulation the run's data-path "
                            "name=path list gives virtual client i the i-th site (docs/federation.md: Sites own their data)",
                            choices=("partition", "site"))
    eval_data_path: str = _opt("", "client-data=site: the server's own evaluation set (e.g. FER2013 with its "
                               "PrivateTest); empty = federated evaluation: each site evaluates the global model on "
                               "its held-out split and sends counts (sites that opt in; never under DP)")
    face_crop: str = _opt("auto", "how photos of JAFFE and manifests become 48x48 faces: detect (Haar, the fixed "
                          "central square as fallback), center (the fixed square), none (already faces), auto "
                          "(detect for photos over 96 px)", choices=("auto", "detect", "center", "none"))
    synthetic_per_class: int = _opt(240, "synthetic faces per class in the train split", minimum=1)
    synthetic_eval_per_class: int = _opt(60, "synthetic faces per class in each of val and test", minimum=1)
    max_train_samples: int = _opt(0, "use at most this many training images (stratified, seeded); 0 = all",
                                  minimum=0)
    cache_dir: str = _opt("", "where decoded datasets and pre-trained initial models are cached; "
                          "empty = $FEDFER_CACHE or ~/.cache/fedfer")
    # --- model --------------------------------------------------------------------------------
    model: str = _opt("cnn_rnn", "model name from the registry (fedfer models lists them; cnn_rnn, the hybrid "
                      "CNN-RNN, is fedfer's model; cnn is its static baseline)")
    rnn: str = _opt("gru", "recurrent cell of cnn_rnn", choices=("gru", "lstm"))
    temporal_attention: bool = _opt(False, "cnn_rnn: attention over the RNN outputs instead of the last one")
    activation: str = _opt("relu", "activation of the models' conv blocks (tanh trains better under DP-SGD)",
                           choices=("relu", "tanh"))
    frontend: str = _opt("pixels", "what the models' conv blocks start from: pixels, or a fixed ScatterNet "
                         "(wavelet scattering, no trained parameters; trains much better under DP-SGD)",
                         choices=("pixels", "scatter"))
    encoder: str = _opt("small", "the models' frame encoder (frontend=pixels only for all but small): small = one conv "
                        "per stage, 16-32-64-128; vgg = two convs per stage, 32-64-128-256; resnet = residual blocks, "
                        "32-64-128-256; resnet-wide = residual blocks, 64-128-256-512 (docs/models.md)",
                        choices=("small", "vgg", "resnet", "resnet-wide"))
    frame_readout: str = _opt("auto", "how a frame's last feature maps become its embedding: mean = their spatial mean, "
                              "flatten = the maps laid out (3x3 for 48x48 faces; keeps where on the face a feature "
                              "is, and learns much faster behind GroupNorm), auto = flatten with frontend=scatter, mean "
                              "with pixels (docs/models.md)", choices=("auto", "mean", "flatten"))
    clip_length: int = _opt(1, "frames per sample T (1 = static images)", minimum=1, maximum=64)
    clip_source: str = _opt("pseudo", "clips of T frames: real sequences (CK+), pseudo = T augmented views of "
                            "one image, none = T forced to 1", choices=("real", "pseudo", "none"))
    clip_sampling: str = _opt("last", "clip-source=real: which T frames of a sequence make its clip: last = the last T "
                              "(ending at the apex), uniform = T spread evenly from onset to apex, random = a random "
                              "window of T consecutive frames (seeded by seed; training clips only, evaluation takes "
                              "the last T)", choices=("last", "uniform", "random"))
    clip_short: str = _opt("pad", "clip-source=real: a sequence with fewer than clip-length frames: pad = its frames "
                           "in order, the last repeated (uniform: each frame repeated evenly), refuse = an error "
                           "naming the sequence", choices=("pad", "refuse"))
    # --- federation -----------------------------------------------------------------------------
    num_clients: int = _opt(4, "number of clients (simulated SuperNodes / partitions)", minimum=1)
    num_server_rounds: int = _opt(8, "federated rounds", minimum=1)
    fraction_train: float = _opt(1.0, "fraction of clients sampled for training each round",
                                 minimum=0.0, maximum=1.0)
    fraction_evaluate: float = _opt(0.0, "fraction of clients sampled for client-side evaluation",
                                    minimum=0.0, maximum=1.0)
    min_train_clients: int = _opt(1, "minimum clients that must train in a round", minimum=1)
    min_available_clients: int = _opt(0, "wait until this many clients are connected before a round; "
                                      "0 = min-train-clients (simulated clients are all there at once)", minimum=0)
    round_timeout: float = _opt(3600.0, "seconds the server waits for clients' replies in a round; clients "
                                "that miss it count as dropped for that round", minimum=1.0)
    strategy: str = _opt("fedavg", "aggregation strategy (fedavgm: server momentum; fedadam/fedyogi: adaptive "
                         "server optimizers, Reddi et al. 2021)",
                         choices=("fedavg", "fedavgm", "fedprox", "fedadam", "fedyogi", "fedmedian", "fedtrimmedavg",
                                  "qfedavg"))
    max_update_norm_ratio: float = _opt(100.0, "the server rejects a client's update whose norm exceeds this many "
                                        "times the round's median update norm (non-finite updates are always "
                                        "rejected); 0 = no norm check; not applied under dp=client, whose "
                                        "clipping bounds every update", minimum=0.0)
    proximal_mu: float = _opt(0.01, "FedProx proximal term weight", minimum=0.0)
    qfedavg_q: float = _opt(1.0, "qfedavg: fairness exponent q of q-FedAvg (Li et al. 2020): each site's update "
                            "weighs with its example count times its loss**q, so sites the global model serves worse "
                            "pull harder; 0 = FedAvg", minimum=0.0)
    qfedavg_lipschitz: float = _opt(0.0, "qfedavg: the Lipschitz estimate L that damps q-FedAvg's step (large L, "
                                    "small steps); 0 = 1/learning-rate, Flower's estimate, derived for SGD clients",
                                    minimum=0.0)
    server_learning_rate: float = _opt(0.0, "server learning rate of fedavgm, fedadam and fedyogi; 0 = the "
                                       "strategy's default (SERVER_LR_DEFAULTS: fedavgm 1.0, fedadam/fedyogi 0.01)",
                                       minimum=0.0)
    server_momentum: float = _opt(0.5, "fedavgm: momentum of the server's update (0.5 measured best of 0.5 / 0.8 on "
                                  "FER2013, docs/convergence.md)", minimum=0.0, maximum=0.999)
    partition: str = _opt("iid", "how training data is split over clients",
                          choices=("iid", "dirichlet", "shard", "quantity", "group"))
    dirichlet_alpha: float = _opt(0.5, "Dirichlet concentration for partition=dirichlet (smaller = more skew)",
                                  minimum=1e-6)
    classes_per_client: int = _opt(2, "classes per client for partition=shard", minimum=1)
    min_client_samples: int = _opt(8, "smallest allowed client partition", minimum=1)
    # --- local training -------------------------------------------------------------------------
    pretrain_epochs: int = _opt(0, "epochs of public pre-training on the embedded synthetic faces before round 1 "
                                "(no privacy cost; the tuned DP recipe sets it)", minimum=0)
    local_epochs: int = _opt(3, "local epochs per round", minimum=1)
    local_steps: int = _opt(0, "optimizer steps per client per round instead of local-epochs passes (the same "
                            "number at every client, whatever its size; under DP each step is one Poisson batch); "
                            "0 = local-epochs", minimum=0)
    local_epoch_fraction: float = _opt(0.0, "local work per round as a fraction of the client's own epoch: each client "
                                       "takes max(1, round(fraction x its batches per epoch)) optimizer steps "
                                       "(batches per epoch = ceil(training samples / batch-size), = 1 / sample rate "
                                       "under DP), so every client passes over its data equally often whatever its "
                                       "size, where local-steps gives a 700-image client as many steps as a "
                                       "10,000-image one; 0 = off", minimum=0.0, maximum=64.0)
    batch_size: int = _opt(64, "training batch size (expected batch size under DP)", minimum=1)
    eval_batch_size: int = _opt(512, "evaluation batch size", minimum=1)
    learning_rate: float = _opt(3e-3, "client learning rate", minimum=0.0)
    optimizer: str = _opt("adamw", "client optimizer", choices=("adamw", "sgd"))
    momentum: float = _opt(0.9, "momentum for optimizer=sgd", minimum=0.0, maximum=1.0)
    weight_decay: float = _opt(1e-4, "weight decay", minimum=0.0)
    optimizer_state: str = _opt("round", "'round' starts each round from a fresh optimizer; 'client' keeps the "
                                "client's momentum/Adam moments in its state across rounds",
                                choices=("round", "client"))
    lr_schedule: str = _opt("constant", "learning rate over the rounds: constant, or cosine from the full rate "
                            "in round 1 towards 0 in the last", choices=("constant", "cosine"))
    augment: str = _opt("none", "augmentation policy applied to training batches",
                        choices=("none", "standard"))
    label_smoothing: float = _opt(0.0, "label smoothing of the training loss (0 = none; 0.1 is common on FER2013); "
                                  "per sample, so it holds under DP-SGD too", minimum=0.0, maximum=0.5)
    class_balance: str = _opt("none", "class-imbalance handling", choices=("none", "weighted-loss"))
    class_weights: str = _opt("", "weighted-loss: 7 public, comma-separated class weights (angry,disgust,fear,happy,"
                              "sad,surprise,neutral); empty = computed from each client's labels (refused under DP)")
    # --- differential privacy ---------------------------------------------------------------------
    dp: str = _opt("none", "differential privacy: none; sample = sample-level DP-SGD (Opacus) on each client: "
                   + DP_SAMPLE_TRUST + "; client = client-level DP-FedAvg: " + DP_CLIENT_TRUST,
                   choices=("none", "sample", "client"))
    noise_multiplier: float = _opt(1.0, "DP noise multiplier (used when target-epsilon = 0)", minimum=0.0)
    target_epsilon: float = _opt(0.0, "if > 0, the noise is computed once to spend this epsilon over all rounds",
                                 minimum=0.0)
    target_delta: float = _opt(1e-5, "DP delta", minimum=0.0, maximum=1.0)
    max_grad_norm: float = _opt(1.0, "per-sample (dp=sample) or per-client (dp=client) clipping norm",
                                minimum=0.0)
    accountant: str = _opt("rdp", "privacy accountant", choices=("rdp", "prv"))
    epsilon_budget: float = _opt(0.0, "a client refuses to train past this epsilon; 0 = target-epsilon, or none",
                                 minimum=0.0)
    augment_multiplicity: int = _opt(1, "K augmented views per sample in each step, gradients averaged per "
                                      "sample before clipping (De et al. 2022); needs augment != none", minimum=1)
    ema_decay: float = _opt(0.0, "exponential moving average of the weights (what a client sends); 0 = off",
                            minimum=0.0, maximum=0.99999)
    physical_batch_size: int = _opt(0, "dp=sample: split each logical batch into physical batches of at most "
                                    "this size (Opacus BatchMemoryManager); 0 = no split", minimum=0)
    dp_recipe: str = _opt("tuned", "dp=sample: 'tuned' takes frontend, activation, pretrain-epochs, batch-size, "
                          "physical-batch-size, optimizer, learning-rate, momentum, weight-decay, optimizer-state, "
                          "lr-schedule, max-grad-norm and ema-decay from fedfer's measured DP recipe, sized to each client's data (docs/privacy.md: "
                          "DP recipe); 'none' uses those keys as set", choices=("tuned", "none"))
    grad_sample_mode: str = _opt("ew", "how Opacus computes per-sample gradients",
                                 choices=("hooks", "functorch", "ew"))
    client_clipping: str = _opt("server", "dp=client: where updates are clipped", choices=("server", "client"))
    adaptive_clipping: bool = _opt(False, "dp=client: adapt the clipping norm each round (refused: its noise "
                                   "calibration is not proven for fedfer's accounting)")
    privacy_unit: str = _opt("sample", "dp=sample: what one epsilon protects: one sample (an image or clip), or one "
                             "person (all samples of a subject id, sampled and clipped together; data without subject "
                             "ids, e.g. FER2013, stays at image level and says so)", choices=("sample", "person"))
    # --- secure aggregation (fer_models/config/secagg_checks.py refuses what SecAgg+ cannot serve) ----------------------
    secure_aggregation: str = _opt("none", "secaggplus: clients mask their updates with Flower's SecAgg+ protocol, "
                                   "the server learns only their (weighted) sum (docs/privacy.md: Privacy guarantees)",
                                   choices=("none", "secaggplus"))
    secagg_num_shares: int = _opt(0, "secaggplus: shares of each client's mask keys (neighbours incl. itself); "
                                  "0 = every sampled client", minimum=0)
    secagg_reconstruction_threshold: int = _opt(0, "secaggplus: shares needed to rebuild a key; up to shares minus "
                                                "this many clients may drop out; 0 = more than half the shares",
                                                minimum=0)
    secagg_clipping_range: float = _opt(8.0, "secaggplus: each entry of a (weighted) model update is clipped to "
                                        "[-range, range] before quantization", minimum=1e-6)
    secagg_quantization_range: int = _opt(4194304, "secaggplus: quantization levels over the clipping range "
                                          "(2**22); error per entry <= clients * 2 * clipping-range / levels / weight "
                                          "share, reported per round", minimum=2, maximum=2**31)
    secagg_max_weight: float = _opt(0.0, "secaggplus: bound on a client's aggregation weight (its num-examples); "
                                    "0 = the training pool's size (1 under dp=client's uniform weights)", minimum=0.0)
    audit_canaries: int = _opt(0, "plant this many audit canaries (mislabelled faces, each included with probability "
                               "1/2 at a random client) for `fedfer audit`'s epsilon lower bound; 0 = off; a test "
                               "instrument: canaries are wrong labels in the training data", minimum=0)
    # --- resources and output -----------------------------------------------------------------------
    num_cpus: float = _opt(1.0, "CPUs given to each simulated client", minimum=0.0)
    num_gpus: float = _opt(0.0, "GPU fraction given to each simulated client", minimum=0.0)
    tracking: str = _opt("none", "follow the run live: tensorboard (event files in <run folder>/tracking), mlflow "
                         "(tracking-uri, or an SQLite store in <run folder>/tracking), all, or none; per-round "
                         "accuracy, loss and epsilon per client, the config, the confusion matrix (needs the tracking "
                         "extra: pip install 'fedfer[tracking]'; docs/quickstart.md)",
                         choices=("none", "tensorboard", "mlflow", "all"))
    tracking_uri: str = _opt("", "tracking=mlflow: the MLflow tracking URI (e.g. http://host:5000); empty = "
                             "sqlite:///<run folder>/tracking/mlflow.db")
    out_dir: str = _opt("", "run folder; empty = runs/<run-name>-<timestamp>")
    overwrite: bool = _opt(False, "allow writing into a run folder that already holds results")
    resume_from: str = _opt("", "checkpoint (or run folder) to continue from; set by fedfer simulate --resume")

    # ------------------------------------------------------------------------------------------
    @classmethod
    def from_flat(cls, values: Mapping[str, Any], *, source: str = "run config") -> "RunConfig":
        """Build from flat kebab-case keys; unknown keys, wrong types and bad values raise ConfigError."""
        kwargs = {k.replace("-", "_"): v for k, v in check_values(values, source=source).items()}
        config = cls(**kwargs)
        check_recipe_keys(config, kwargs, source=source)
        config = config.resolved()
        config.check()
        return config

    def to_flat(self) -> dict[str, ConfigValue]:
        """Flat kebab-case dict (what goes into run_config / summary.json)."""
        return {_key(f.name): getattr(self, f.name) for f in fields(self)}

    def replace(self, **changes: Any) -> "RunConfig":
        new = dataclasses.replace(self, **changes).resolved()
        new.check()
        return new

    def resolved(self) -> "RunConfig":
        """The settings actually used: under dp=sample with dp-recipe=tuned, the recipe's values replace the
        keys it chooses (RECIPE_KEYS), so every reader (clients, server, summary, report, ``fedfer config``)
        sees what ran. Per-client sizes (batch, learning rate) are reported by each client."""
        config = self
        if self.server_learning_rate == 0.0 and self.strategy in SERVER_LR_DEFAULTS:
            config = dataclasses.replace(config, server_learning_rate=SERVER_LR_DEFAULTS[self.strategy])
        if not (self.dp == "sample" and self.dp_recipe == "tuned"):
            return config
        return dataclasses.replace(config, **{f.name: TUNED.run_values()[_key(f.name)] for f in fields(self)
                                              if _key(f.name) in RECIPE_KEYS})

    def check(self) -> None:
        """Cross-field checks that a single value cannot express."""
        if self.dp == "sample" and self.target_epsilon == 0.0 and self.noise_multiplier == 0.0:
            raise ConfigError("dp=sample needs noise-multiplier > 0 or target-epsilon > 0")
        if self.strategy == "qfedavg" and self.qfedavg_lipschitz == 0 and self.learning_rate == 0:
            raise ConfigError("strategy=qfedavg with learning-rate=0: q-FedAvg's default Lipschitz estimate is "
                              "1/learning-rate; set qfedavg-lipschitz > 0 or learning-rate > 0")
        if self.augment_multiplicity > 1 and self.augment == "none":
            raise ConfigError(f"augment-multiplicity={self.augment_multiplicity} needs augment=standard (with "
                              f"augment=none the views would be identical)")
        if self.local_steps and self.local_epoch_fraction:
            raise ConfigError(f"local-steps={self.local_steps} and local-epoch-fraction={self.local_epoch_fraction:g} "
                              f"both size the local work of a round: set one of them (the other to 0)")
        if self.encoder != "small" and self.frontend != "pixels":
            chosen = " (chosen by the tuned DP recipe: add dp-recipe=none to choose it)" if (
                self.dp == "sample" and self.dp_recipe == "tuned") else ""
            raise ConfigError(f"encoder={self.encoder} has four 2x stages for 48x48 faces and starts from pixels; "
                              f"frontend={self.frontend}{chosen}: set frontend=pixels, or encoder=small")
        if self.min_train_clients > self.num_clients:
            raise ConfigError(f"min-train-clients={self.min_train_clients} exceeds "
                              f"num-clients={self.num_clients}")
        if self.client_data == "site":
            check_site_settings(self)
        self.public_class_weights  # noqa: B018  (parses class-weights, raising ConfigError if malformed)
        check_privacy_settings(self)
        check_secure_aggregation(self)

    @property
    def public_class_weights(self) -> tuple[float, ...] | None:
        """class-weights as 7 numbers, or None when not given."""
        if not self.class_weights.strip():
            return None
        try:
            values = tuple(float(v) for v in self.class_weights.split(","))
        except ValueError:
            values = ()
        if len(values) != NUM_CLASSES or not all(math.isfinite(v) and v >= 0 for v in values):
            raise ConfigError(f"class-weights={self.class_weights!r}: expected {NUM_CLASSES} non-negative numbers "
                              f"separated by commas, one per class (angry,disgust,fear,happy,sad,surprise,neutral)")
        return values

    @property
    def budget(self) -> float:
        """Epsilon a client may not exceed (inf when unlimited)."""
        if self.epsilon_budget > 0:
            return self.epsilon_budget
        if self.target_epsilon > 0:
            return self.target_epsilon
        return float("inf")

    def local_steps_for(self, *, num_samples: int, batch_size: int) -> int:
        """Optimizer steps a client with ``num_samples`` training units takes per round: local-steps, or
        local-epoch-fraction of its own epoch of ceil(num_samples / batch_size) batches, rounded half up (at
        least 1); 0 = whole local-epochs passes."""
        key = local_work_key({"local-steps": self.local_steps, "local-epoch-fraction": self.local_epoch_fraction})
        if key == "local-steps":
            return self.local_steps
        if key == "local-epoch-fraction":
            return max(1, math.floor(self.local_epoch_fraction * math.ceil(num_samples / batch_size) + 0.5))
        return 0

    @property
    def clients_per_round(self) -> int:
        """How many clients FedAvg samples each round (Flower: int(N * fraction), at least the minimum)."""
        return max(int(self.num_clients * self.fraction_train), self.min_train_clients)

    @property
    def uses_synthetic(self) -> bool:
        return self.data_format == "synthetic" or (self.data_format == "auto" and not self.data_path)


def local_work_key(values: Mapping[str, Any]) -> str:
    """The key that sizes a client's local work per round in flat settings ``values``: local-steps, else
    local-epoch-fraction, else local-epochs (the first two together are refused). Reads any flat mapping,
    an older run's config.json included."""
    for key in ("local-steps", "local-epoch-fraction"):
        if float(values.get(key) or 0) > 0:
            return key
    return "local-epochs"


def check_site_settings(cfg: RunConfig) -> None:
    """client-data=site: settings that only mean something for one partitioned dataset are refused."""
    if cfg.leave_out_group:
        raise ConfigError(f"leave-out-group={cfg.leave_out_group!r} holds a group out of one combined dataset; with "
                          f"client-data=site every site keeps its data: leave a site out by not starting it, and "
                          f"evaluate on it with eval-data-path")
    if cfg.partition != "iid":
        raise ConfigError(f"partition={cfg.partition} splits one dataset over clients; with client-data=site each "
                          f"site trains on its own data whole: remove partition")
    if cfg.dp != "none" and not cfg.eval_data_path:
        raise ConfigError(f"dp={cfg.dp} with client-data=site needs eval-data-path (a server-held evaluation set, "
                          f"e.g. FER2013 with PrivateTest): under DP the sites send no evaluation counts, which "
                          f"would be released outside the accounted mechanism")
    if cfg.audit_canaries:
        raise ConfigError("audit-canaries plants canaries in one shared dataset's partitions (client-data=partition); "
                          "with client-data=site each site's data is its own: audit a partition run")
    if cfg.data_path and "=" not in cfg.data_path:
        raise ConfigError(f"client-data=site with data-path={cfg.data_path!r}: in simulation data-path lists the "
                          f"sites as name=path,name=path (one virtual client each); in a deployment leave it empty "
                          f"and give each SuperNode its own --node-config \"data-path=...\"")


def check_recipe_keys(cfg: RunConfig, given: Mapping[str, Any], *, source: str) -> None:
    """Refuse keys the tuned DP recipe chooses itself when they were set to another value (dp=sample,
    dp-recipe=tuned): they would be silently ignored. ``given`` maps field names to the values set;
    a value equal to the default (``flwr run`` passes every default) or to the recipe's is no choice."""
    if not (cfg.dp == "sample" and cfg.dp_recipe == "tuned"):
        return
    default, recipe = RunConfig(), TUNED.run_values()
    chosen = [_key(n) for n, v in given.items() if _key(n) in RECIPE_KEYS
              and v != getattr(default, n) and v != recipe[_key(n)]]
    if chosen:
        raise ConfigError(f"{source}: {', '.join(chosen)} set while dp=sample uses the tuned DP recipe, "
                          f"which chooses {', '.join(RECIPE_KEYS)} itself (docs/privacy.md: DP recipe); remove "
                          f"them, or add dp-recipe=none to choose them yourself")


def _key(name: str) -> str:
    return name.replace("_", "-")


def check_values(values: Mapping[str, Any], *, source: str) -> dict[str, ConfigValue]:
    """Each value coerced to its key's type and range-checked (no cross-field checks); errors name ``source``."""
    known = {_key(f.name): f for f in fields(RunConfig)}
    out: dict[str, ConfigValue] = {}
    for key, raw in values.items():
        spec = known.get(key)
        if spec is None:
            hint = difflib.get_close_matches(key, list(known), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{source}: unknown key {key!r}{did_you_mean}; "
                              f"known keys are listed by `fedfer config`")
        out[key] = _coerce(key, raw, type(spec.default), spec.metadata, source)
    return out


def describe_keys() -> list[tuple[str, ConfigValue, str]]:
    """(key, default, help) for every setting, in declaration order."""
    out = []
    for f in fields(RunConfig):
        help_text = f.metadata["help"]
        if f.metadata["choices"]:
            help_text += f" ({' | '.join(f.metadata['choices'])})"
        out.append((_key(f.name), f.default, help_text))
    return out


def choices_of(key: str) -> tuple[str, ...]:
    """The allowed values of setting ``key`` (``face-crop``), for a command-line flag that mirrors it."""
    (spec,) = [f for f in fields(RunConfig) if _key(f.name) == key]
    return tuple(spec.metadata["choices"])


def default_flat() -> dict[str, ConfigValue]:
    return RunConfig().to_flat()


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _coerce(key: str, raw: Any, kind: type, meta: Mapping[str, Any], source: str) -> ConfigValue:
    where = f"{source}: {key}={raw!r}"
    value: ConfigValue
    if kind is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.lower() in _TRUE | _FALSE:
            value = raw.lower() in _TRUE
        else:
            raise ConfigError(f"{where}: expected true or false")
    elif kind is int:
        if isinstance(raw, bool) or not isinstance(raw, (int, str)):
            raise ConfigError(f"{where}: expected an integer")
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer") from None
    elif kind is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ConfigError(f"{where}: expected a number")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{where}: expected a number") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number (NaN and infinity are not settings)")
    else:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string")
        value = raw
    choices = meta.get("choices") or ()
    if choices and value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}")
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo:  # type: ignore[operator]
        raise ConfigError(f"{where}: must be >= {lo}")
    if hi is not None and value > hi:  # type: ignore[operator]
        raise ConfigError(f"{where}: must be <= {hi}")
    return value
