"""Training hyperparameters of one adapt run; the defaults follow the published benchmark where it was sound."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from medtransfer.errors import MedtransferError
from medtransfer.vocabulary import PRECISIONS


@dataclass
class AdaptConfig:
    """Everything the training loop needs to know; ``None`` means "the method's default".

    ``lr``: learning rate of the backbone's trainable parameters (method default: PEFT 1e-4, FFT 1e-5,
    LP 3e-2). The freshly initialised head learns at ``lr * head_lr_scale`` (LP: ``lr``).
    Options of one method (rank, alpha, dropout, block size, ...) are not here: each method declares its own
    (``adapt.options``, ``AdaptMethod.options``).
    ``early_stopping``: "mcc" (validation MCC, higher is better) or "loss" (validation loss);
    ``patience`` epochs without improvement stop the run; the best epoch's weights are restored.
    ``balance``: "weighted-loss" (class-weighted cross-entropy) or "sampler" (class-balanced sampling).
    """

    epochs: int = 20
    lr: float | None = None
    head_lr_scale: float = 10.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9)
    warmup_fraction: float = 0.1  # of all optimizer steps, linear from 0, then cosine to 0
    batch_size: int = 32
    eval_batch_size: int | None = None  # default: 2 x batch_size
    grad_accumulation: int = 1
    balance: str = "weighted-loss"
    early_stopping: str = "mcc"
    patience: int = 5
    min_epochs: int = 1
    # full regime: after val picked the epoch count, retrain from scratch on train + val for that many epochs,
    # as probe refits its head on train + val; None: the method's default (lp: yes, others: no)
    refit: bool | None = None
    train_norms: bool = False  # also train normalisation layers' affine parameters (PEFT methods)
    # "cxr" (small random-resized crops, rotations, brightness/contrast) or "none"; None: the method's default
    # (lp: "none", so that it sees exactly the features probe's logreg sees; every other method: "cxr")
    augment: str | None = None
    hflip: bool = False
    # vocabulary.PRECISIONS: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16" (CUDA only:
    # fp16 autocast needs a GradScaler against underflowing gradients, which adapt uses on CUDA)
    precision: str = "auto"
    channels_last: bool | None = None  # None: on CUDA for CNNs
    compile: bool = False
    num_workers: int = 0  # image-decoding workers, used once per run to fill the in-memory pixel store
    max_grad_norm: float | None = 1.0  # gradient clipping; None or 0 turns it off
    seed: int = 0
    # train and test at this input size instead of the backbone's (quick runs on a CPU; CNNs take any size, ViTs
    # that interpolate their position embeddings too); None: the backbone's own preprocessing size
    image_size: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.grad_accumulation >= 1, f"gradient accumulation must be at least 1, got {self.grad_accumulation}"),
            (self.lr is None or self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (self.optimizer in ("adamw", "sgd"), f"--optimizer must be adamw or sgd, got {self.optimizer!r}"),
            (self.balance in ("weighted-loss", "sampler", "none"),
             f"--balance must be weighted-loss, sampler or none, got {self.balance!r}"),
            (self.early_stopping in ("mcc", "loss"),
             f"--early-stopping must be mcc or loss, got {self.early_stopping!r}"),
            (self.augment in (None, "cxr", "none"), f"--augment must be cxr or none, got {self.augment!r}"),
            (self.precision in PRECISIONS, f"--precision must be {', '.join(PRECISIONS)}, got {self.precision!r}"),
            (0 <= self.warmup_fraction < 1, f"warmup fraction must be in [0, 1), got {self.warmup_fraction}"),
            (self.image_size is None or self.image_size >= 16,
             f"--image-size must be at least 16, got {self.image_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise MedtransferError(message)

    def as_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, default=str)
