"""The papers' hand-tuned configurations and reported numbers, as data (../shared/paper_tables.md).

The protocol the paper leaves out is written down here as explicit assumptions, each with its
reason; a study may override any of them (`baselines.protocol`), and every comparison prints them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hpo.display import describe_arch as describe


@dataclass(frozen=True)
class Row:
    table: int
    widths: tuple[int, ...]
    optimizer: str
    lr: float
    reported: float  # accuracy as a fraction
    note: str = ""

    @property
    def name(self) -> str:
        return f"T{self.table} {describe(self.widths)} {self.optimizer} lr={self.lr:g}"


@dataclass(frozen=True)
class Assumption:
    key: str
    value: object
    reason: str
    tables: tuple[int, ...] = ()  # the tables it concerns; () for all (a comparison prints only what applies)


@dataclass(frozen=True)
class Paper:
    key: str
    title: str
    dataset: str
    rows: tuple[Row, ...]
    protocol: tuple[Assumption, ...]

    def table(self, n: int) -> list[Row]:
        return [r for r in self.rows if r.table == n]

    @property
    def tables(self) -> list[int]:
        return sorted({r.table for r in self.rows})


YOUN_HONG_PROTOCOL = (
    Assumption("epochs", 10, "not stated; 10 gives every configuration a fair chance to converge. The low-lr rows "
                             "(63-70% at SGD lr 0.001) match about ONE epoch at batch 64 (measured: 68.6% for "
                             "784-30-10, 68.0% for 784-50-10 after epoch 1), so the paper may have trained far less; "
                             "set baselines.protocol.epochs to test that reading"),
    Assumption("batch_size", 64, "not stated; 64 is the common default of the tutorials the paper follows"),
    Assumption("momentum", 0.0, "Tables 1-2 say 'ReLU alone': read as plain SGD (optimizer `sgd` has no momentum)",
               tables=(1, 2)),
    Assumption("init", "default", "not stated; PyTorch's default initialisation"),
    Assumption("schedule", "constant", "no schedule is mentioned"),
    Assumption("weight_decay", 0.0, "no regularisation is mentioned"),
    Assumption("dropout", 0.0, "no regularisation is mentioned"),
    Assumption("label_smoothing", 0.0, "no regularisation is mentioned"),
    Assumption("augment", "none", "no data augmentation is mentioned"),
    Assumption("normalisation", "standardise", "not stated; inputs scaled to [0,1] and standardised with the "
                                              "training mean and std (an assumption, fixed for every run here)"),
    Assumption("evaluated_on", "test", "not stated whether 'Precision' is test or validation accuracy; "
                                       "re-runs are measured on the 10k test set, after tuning on a validation split"),
)

PAPERS: dict[str, Paper] = {
    "youn_hong_2024": Paper(
        key="youn_hong_2024",
        title="Youn & Hong 2024, Optimization of Model based on Relu Activation Function in MLP Neural Network Model",
        dataset="fashion_mnist",
        rows=(
            Row(1, (50,), "sgd", 0.001, 0.6975),
            Row(1, (40,), "sgd", 0.01, 0.9377),
            Row(1, (35,), "sgd", 0.01, 0.8822, "lr read from a merged cell"),
            Row(1, (30,), "sgd", 0.001, 0.6383),
            Row(1, (30,), "sgd", 0.01, 0.8851),
            Row(1, (30,), "sgd", 0.1, 0.9328),
            Row(1, (30,), "sgd", 1.0, 0.9670, "the paper's best without Adam"),
            Row(1, (20,), "sgd", 0.1, 0.9321),
            Row(2, (40, 30), "sgd", 0.001, 0.3313),
            Row(2, (50, 20), "sgd", 0.001, 0.3287, "lr read from a merged cell"),
            Row(2, (50, 30), "sgd", 0.01, 0.8805),
            Row(2, (50, 30), "sgd", 0.1, 0.9509),
            Row(2, (45, 30), "sgd", 0.01, 0.8789),
            Row(3, (50, 30), "adam", 0.001, 0.9698),
            Row(3, (60, 30), "adam", 0.001, 0.9699),
            Row(3, (60, 40), "adam", 0.001, 0.9707, "the paper's best"),
        ),
        protocol=YOUN_HONG_PROTOCOL,
    ),
}

# Reference points: Fashion-MNIST benchmark (Xiao et al. 2017, Table 3), scikit-learn MLPClassifier, test accuracy.
REFERENCES = (
    {"name": "Xiao et al. 2017: MLPClassifier relu (100,)", "widths": (100,), "activation": "relu", "fashion_mnist": 0.871, "mnist": 0.972},
    {"name": "Xiao et al. 2017: MLPClassifier relu (10,)", "widths": (10,), "activation": "relu", "fashion_mnist": 0.848, "mnist": 0.933},
    {"name": "Xiao et al. 2017: MLPClassifier tanh (100,)", "widths": (100,), "activation": "tanh", "fashion_mnist": 0.868, "mnist": 0.962},
)

# Protocol keys that are TrainConfig fields (the rest describe data handling and are fixed here).
TRAIN_KEYS = ("epochs", "batch_size", "init", "schedule", "weight_decay", "dropout", "label_smoothing", "augment")


def protocol(paper: Paper, overrides: dict | None = None) -> dict:
    """The protocol assumptions as a dict, with a study's overrides applied."""
    values = {a.key: a.value for a in paper.protocol}
    values.update(overrides or {})
    return values


def row_config(row: Row, proto: dict) -> dict:
    """TrainConfig keyword arguments for one paper row under the given protocol."""
    hp = {k: proto[k] for k in TRAIN_KEYS if k in proto}
    hp.update(widths=row.widths, optimizer=row.optimizer, lr=row.lr, activation="relu")
    return hp

# Bansal 2022, Table 1, Fashion-MNIST: learned (P_relu, P_tanh, P_sin) per activation layer of its CNN.
PAPER_MIX_FMNIST = ((0.5178, 0.1470, 0.3352), (0.2907, 0.7001, 0.0091), (0.1221, 0.0410, 0.8369))
