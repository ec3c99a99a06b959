"""peft's other tuners that apply to vision Linear / Conv layers (issue 15), used as peft implements them.

Each gets a typed options dataclass whose defaults are peft's (peft 0.21, ``peft/tuners/<tuner>/config.py``), which
follow the tuner's paper, and a config maker over the backbone's targets (``adapt.methods.PeftCall``).
AdaLoRA's rank budget is scheduled over the run's optimizer steps by its ``step_hook`` (``train.fit`` calls it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from medtransfer.adapt.methods import LOG, PeftCall, register_peft_method
from medtransfer.adapt.options import AT_LEAST_ONE, PROBABILITY, PeftOptions, option
from medtransfer.errors import MedtransferError

POSITIVE = (lambda v: v > 0, "must be positive")
FRACTION = (lambda v: 0 <= v < 1, "must be in [0, 1)")


def _rank(default: int, source: str) -> int:
    return option(default, f"rank r ({source}; part of the method label)", rule=AT_LEAST_ONE)


@dataclass(frozen=True)
class AdaLoraOptions(PeftOptions):
    """AdaLoRA: SVD-form LoRA whose rank budget shrinks from ``init_rank`` to ``rank`` over training."""

    rank: int = _rank(8, "target rank after pruning; peft AdaLoraConfig.target_r 8")
    init_rank: int = option(12, "rank every target starts with (peft AdaLoraConfig.init_r 12)", rule=AT_LEAST_ONE)
    alpha: float = option(8.0, "scaling alpha (peft LoraConfig.lora_alpha default 8)", rule=POSITIVE)
    dropout: float = option(0.0, "dropout on the adapter's input (peft default 0)", rule=PROBABILITY)
    # peft/tuners/adalora/config.py docstring example: tinit=10, tfinal=20 of total_step=100 (fractions 0.1, 0.2)
    warmup_fraction: float = option(0.1, "share of the run's steps before pruning starts (peft's example: 10/100)",
                                    rule=FRACTION)
    final_fraction: float = option(0.2, "share of the run's last steps with the budget fixed (peft's example: "
                                   "20/100)", rule=FRACTION)


def _adalora(peft, call: PeftCall):
    o = call.options
    if o.init_rank < o.rank:
        raise MedtransferError(f"adalora: --option init_rank ({o.init_rank}) must be at least rank ({o.rank})")
    if o.warmup_fraction + o.final_fraction >= 1:
        raise MedtransferError("adalora: warmup_fraction + final_fraction must be below 1")
    # total_step is a placeholder until the first step: the hook sets the run's real step count
    return peft.AdaLoraConfig(target_r=o.rank, init_r=o.init_rank, lora_alpha=o.alpha, lora_dropout=o.dropout,
                              target_modules=call.patterns, total_step=100, tinit=round(100 * o.warmup_fraction),
                              tfinal=round(100 * o.final_fraction))


def adalora_step(backbone: nn.Module, step: int, total_steps: int) -> None:
    """After each optimizer step, before the gradients are cleared (peft's ``update_and_allocate`` rule): the
    budget schedule follows this run's step count (warmup and final shares of it, as the options say)."""
    peft_config = backbone.peft_config["default"]  # the RankAllocator holds this same object
    if peft_config.total_step != total_steps:
        warmup, final = peft_config.tinit / peft_config.total_step, peft_config.tfinal / peft_config.total_step
        peft_config.total_step = total_steps
        peft_config.tinit = int(warmup * total_steps)
        peft_config.tfinal = int(final * total_steps)
    backbone.base_model.update_and_allocate(step)


@dataclass(frozen=True)
class FourierFTOptions(PeftOptions):
    """FourierFT: ``n_frequency`` trained spectral coefficients per target weight, scaled."""

    # peft FourierFTConfig help: "For image classification tasks with Vit-large models, adopting 'n_frequency': 3000
    # can almost achieve similar results as 'r': 16 in LoRA"; scaling "300.0 for both ViT-base and ViT-large"
    n_frequency: int = option(3000, "trained frequencies per target (peft's ViT setting 3000)", rule=AT_LEAST_ONE)
    scaling: float = option(300.0, "scale of the update (peft's ViT setting 300)", rule=POSITIVE)


def _fourierft(peft, call: PeftCall):
    o = call.options
    smallest = min(m.in_features * m.out_features for m in call.matched.values())
    if o.n_frequency > smallest:
        raise MedtransferError(f"method 'fourierft' cannot apply to backbone {call.spec.name!r} "
                               f"(family {call.spec.family}): n_frequency "
                               f"{o.n_frequency} exceeds a target's {smallest} weights; give --option n_frequency=N")
    return peft.FourierFTConfig(target_modules=call.patterns, n_frequency=o.n_frequency, scaling=o.scaling,
                                random_loc_seed=call.config.seed + 777)


@dataclass(frozen=True)
class HraOptions(PeftOptions):
    rank: int = _rank(8, "Householder reflections per target; peft HRAConfig.r 8, best even")


def _hra(peft, call: PeftCall):
    return peft.HRAConfig(r=call.options.rank, target_modules=call.patterns)


def _divisor(matched: dict[str, nn.Module], cap: int, method: str, what: str) -> int:
    """The largest size <= ``cap`` dividing every target's in and out features (VB-LoRA's vector length, C3A's
    block size must divide them); a warning when it is smaller than asked."""
    size = 0
    for module in matched.values():
        for n in (module.in_features, module.out_features):
            size = math.gcd(size, n)
    chosen = next(d for d in range(min(cap, size), 0, -1) if size % d == 0)
    if chosen != cap:
        LOG.warning("%s: %s %d does not divide every target's sizes; using %d", method, what, cap, chosen)
    return chosen


@dataclass(frozen=True)
class VBLoraOptions(PeftOptions):
    """VB-LoRA: every LoRA factor is a top-k mix of vectors from one shared bank."""

    rank: int = _rank(4, "peft VBLoRAConfig.r 4")
    num_vectors: int = option(256, "vectors in the shared bank (peft default 256)", rule=AT_LEAST_ONE)
    vector_length: int = option(256, "length of each bank vector (peft default 256; the largest divisor of every "
                                "target's sizes up to it is used)", rule=AT_LEAST_ONE)
    topk: int = option(2, "bank vectors mixed per sub-vector (peft default 2)", rule=AT_LEAST_ONE)


def _vblora(peft, call: PeftCall):
    o = call.options
    length = _divisor(call.matched, o.vector_length, "vblora", "vector_length")
    return peft.VBLoRAConfig(r=o.rank, target_modules=call.patterns, vector_length=length, num_vectors=o.num_vectors,
                             topk=min(o.topk, o.num_vectors))


@dataclass(frozen=True)
class RandLoraOptions(PeftOptions):
    rank: int = _rank(32, "rank of each shared random basis; peft RandLoraConfig.r 32")
    alpha: float | None = option(None, "scaling; default 20 x rank (peft: 'typically 20 times the rank', 640 for r "
                                 "32)", rule=(lambda v: v is None or v > 0, "must be positive"))

    def record(self) -> dict:
        return {"targets": self.targets, "rank": self.rank,
                "alpha": self.alpha if self.alpha is not None else 20.0 * self.rank}


def _randlora(peft, call: PeftCall):
    o = call.options
    return peft.RandLoraConfig(r=o.rank, randlora_alpha=o.record()["alpha"], target_modules=call.patterns,
                               projection_prng_key=call.config.seed)


@dataclass(frozen=True)
class ShiraOptions(PeftOptions):
    rank: int = _rank(32, "a target gets r x (in + out) sparse entries, as many as LoRA r; peft ShiraConfig.r 32")


def _shira(peft, call: PeftCall):
    return peft.ShiraConfig(r=call.options.rank, target_modules=call.patterns, random_seed=call.config.seed)


@dataclass(frozen=True)
class C3aOptions(PeftOptions):
    block_size: int = option(256, "circulant block size (peft C3AConfig default 256; the largest divisor of every "
                             "target's sizes up to it is used)", rule=AT_LEAST_ONE)


def _c3a(peft, call: PeftCall):
    return peft.C3AConfig(block_size=_divisor(call.matched, call.options.block_size, "c3a", "block_size"),
                          target_modules=call.patterns)


@dataclass(frozen=True)
class MissOptions(PeftOptions):
    rank: int = _rank(64, "shard size along the input; peft MissConfig.r 64, best even")
    dropout: float = option(0.0, "dropout on the adapter (peft default 0)", rule=PROBABILITY)


def _miss(peft, call: PeftCall):
    return peft.MissConfig(r=call.options.rank, miss_dropout=call.options.dropout, target_modules=call.patterns)


@dataclass(frozen=True)
class HiraOptions(PeftOptions):
    rank: int = _rank(32, "rank of the Hadamard factors; peft HiraConfig.r 32")
    dropout: float = option(0.0, "dropout on the adapter's input (peft default 0)", rule=PROBABILITY)


def _hira(peft, call: PeftCall):
    return peft.HiraConfig(r=call.options.rank, target_modules=call.patterns, hira_dropout=call.options.dropout)


@dataclass(frozen=True)
class DeloraOptions(PeftOptions):
    rank: int = _rank(8, "peft DeloraConfig.r 8")
    bound: float = option(15.0, "initial bound lambda on the update's Frobenius norm (peft delora_lambda 15)",
                          rule=POSITIVE)
    dropout: float = option(0.0, "probability of dropping a whole module's update (peft default 0)", rule=PROBABILITY)


def _delora(peft, call: PeftCall):
    o = call.options
    return peft.DeloraConfig(r=o.rank, delora_lambda=o.bound, module_dropout=o.dropout, target_modules=call.patterns)


@dataclass(frozen=True)
class GraloraOptions(PeftOptions):
    rank: int = _rank(32, "total rank, split into k x k blocks; peft GraloraConfig.r 32")
    alpha: float = option(64.0, "scaling alpha, scale alpha / r (peft default 64)", rule=POSITIVE)
    k: int = option(2, "sub-blocks per side (peft default 2, recommended for rank <= 32); must divide rank",
                    rule=AT_LEAST_ONE)
    dropout: float = option(0.0, "dropout on the adapter's input (peft default 0)", rule=PROBABILITY)


def _gralora(peft, call: PeftCall):
    o = call.options
    return peft.GraloraConfig(r=o.rank, alpha=o.alpha, gralora_k=o.k, gralora_dropout=o.dropout,
                              target_modules=call.patterns)


LINEAR = (nn.Linear,)
LINEAR_CONV2D = (nn.Linear, nn.Conv2d)

register_peft_method(
    name="adalora", description="AdaLoRA (peft): SVD-form LoRA with a rank budget pruned over the run's steps",
    trains="AdaLoRA P, Lambda, Q", make_config=_adalora, supported=LINEAR_CONV2D, adapter_prefixes=("lora_",),
    options=AdaLoraOptions, paper="Zhang et al. 2023, arXiv:2303.10512", step_hook=adalora_step)
register_peft_method(
    name="fourierft", description="FourierFT (peft): sparse spectral coefficients of the weight update",
    trains="Fourier coefficients", make_config=_fourierft, supported=LINEAR, adapter_prefixes=("fourierft_",),
    options=FourierFTOptions, paper="Gao et al. 2024, arXiv:2405.03003")
register_peft_method(
    name="hra", description="HRA (peft): Householder reflection adaptation", trains="Householder vectors",
    make_config=_hra, supported=LINEAR_CONV2D, adapter_prefixes=("hra_",), options=HraOptions,
    paper="Yuan et al. 2024, arXiv:2405.17484")
register_peft_method(
    name="vblora", description="VB-LoRA (peft): LoRA factors composed from a shared vector bank",
    trains="vector bank + logits", make_config=_vblora, supported=LINEAR, adapter_prefixes=("vblora_",),
    options=VBLoraOptions, paper="Li et al. 2024, arXiv:2405.15179")
register_peft_method(
    name="randlora", description="RandLoRA (peft): full-rank update from shared random bases",
    trains="RandLoRA scaling vectors", make_config=_randlora, supported=LINEAR, adapter_prefixes=("randlora_",),
    options=RandLoraOptions, paper="Albert et al. 2025, arXiv:2502.00987")
register_peft_method(
    name="shira", description="SHiRA (peft): sparse high-rank adapter on a random mask",
    trains="sparse weight entries", make_config=_shira, supported=LINEAR, adapter_prefixes=("shira_",),
    options=ShiraOptions, paper="Bhardwaj et al. 2024, arXiv:2406.13175")
register_peft_method(
    name="c3a", description="C3A (peft): circular-convolution adaptation", trains="circulant kernels",
    make_config=_c3a, supported=LINEAR, adapter_prefixes=("c3a_",), options=C3aOptions,
    paper="Chen et al. 2024, arXiv:2407.19342")
register_peft_method(
    name="miss", description="MiSS (peft): matrix shard sharing", trains="shared shards", make_config=_miss,
    supported=LINEAR, adapter_prefixes=("miss_",), options=MissOptions, paper="Kang & Yin 2024, arXiv:2409.15371")
register_peft_method(
    name="hira", description="HiRA (peft): Hadamard high-rank adaptation", trains="HiRA factors",
    make_config=_hira, supported=LINEAR_CONV2D, adapter_prefixes=("hira_",), options=HiraOptions,
    paper="Huang et al. 2025, ICLR (openreview TwJrTz9cRS)")
register_peft_method(
    name="delora", description="DeLoRA (peft): decoupled low-rank adaptation (bounded norm)",
    trains="DeLoRA factors + norms", make_config=_delora, supported=LINEAR, adapter_prefixes=("delora_",),
    options=DeloraOptions, paper="Bini et al. 2025, arXiv:2503.18225")
register_peft_method(
    name="gralora", description="GraLoRA (peft): granular (block-wise) LoRA", trains="GraLoRA blocks",
    make_config=_gralora, supported=LINEAR, adapter_prefixes=("gralora_",), options=GraloraOptions,
    paper="Jung et al. 2025, arXiv:2505.20355")
