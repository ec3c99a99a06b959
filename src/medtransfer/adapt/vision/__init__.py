"""Vision-specific PEFT methods that peft does not provide, each a small module wrapping the frozen backbone.

Every module exposes its typed options (``Options``, a ``MethodOptions`` dataclass with the paper's defaults),
``apply(model, spec, options)``, ``declares(name, model, spec)`` (the parameter names it trains) and a closed-form
trainable-parameter count from the method's definition. Importing this package registers them (``adapt.methods``
does so after its own methods).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medtransfer.adapt.config import AdaptConfig
from medtransfer.adapt.methods import PEFT_LR, register_method
from medtransfer.adapt.options import MethodOptions
from medtransfer.adapt.vision import adapters, adaptformer, bn_tune, fact, ssf, vpt
from medtransfer.backbones.registry import BackboneSpec


def _apply(apply: Callable[[nn.Module, BackboneSpec, MethodOptions], nn.Module]):
    """The registry's ``apply(backbone, spec, options, config)``: the vision methods read only their options."""

    def wrapped(model: nn.Module, spec: BackboneSpec, options: MethodOptions, config: AdaptConfig) -> nn.Module:
        return apply(model, spec, options)

    return wrapped


def _register(name: str, description: str, trains: str, paper: str, *, apply, declares, expected, options,
              **traits) -> None:
    register_method(name=name, description=description, trains=f"{trains} + head", default_lr=PEFT_LR,
                    apply=_apply(apply), declares=declares, options=options, paper=paper,
                    expected_trainable=expected, **traits)


VPT_PAPER = "Jia et al. 2022, arXiv:2203.12119"
FACT_PAPER = "Jie & Deng 2023, arXiv:2212.03145"

_register("vpt-shallow", "VPT-shallow: prompt tokens after the class token at the input", "input prompt tokens",
          VPT_PAPER, apply=vpt.apply_shallow, declares=vpt.declares, expected=vpt.expected_shallow,
          options=vpt.Options)
_register("vpt-deep", "VPT-deep: new prompt tokens at every block", "per-block prompt tokens", VPT_PAPER,
          apply=vpt.apply_deep, declares=vpt.declares, expected=vpt.expected_deep, options=vpt.Options)
_register("adaptformer", "AdaptFormer: parallel bottleneck adapter beside each MLP, scale 0.1",
          "parallel MLP adapters", "Chen et al. 2022, arXiv:2205.13535", apply=adaptformer.apply,
          declares=adaptformer.declares, expected=adaptformer.expected_trainable, options=adaptformer.Options)
_register("adapter", "Houlsby adapters: sequential bottlenecks after attention and MLP (+ layer norms)",
          "sequential adapters + block LayerNorms", "Houlsby et al. 2019, arXiv:1902.00751", apply=adapters.apply,
          declares=adapters.declares, expected=adapters.expected_trainable, options=adapters.Options)
_register("ssf", "SSF: scale and shift after every operation", "per-channel scales and shifts",
          "Lian et al. 2022, arXiv:2210.08823", apply=ssf.apply, declares=ssf.declares,
          expected=ssf.expected_trainable, options=ssf.Options)
_register("fact-tt", "FacT-TT: shared low-rank factors, a core per weight", "shared U, V + per-weight cores",
          FACT_PAPER, apply=fact.apply_tt, declares=fact.declares, expected=fact.expected_tt, options=fact.Options)
_register("fact-tk", "FacT-TK: shared low-rank factors and one shared core tensor", "shared U, V, C, P",
          FACT_PAPER, apply=fact.apply_tk, declares=fact.declares, expected=fact.expected_tk, options=fact.TKOptions)
_register("bn-tune", "BN-tuning (CNNs): BatchNorm affine parameters and running statistics", "BatchNorm layers",
          "Dutt et al. 2023, arXiv:2305.08252", apply=bn_tune.apply, declares=bn_tune.declares,
          expected=bn_tune.expected_trainable, options=bn_tune.Options, norm_stats="train")
