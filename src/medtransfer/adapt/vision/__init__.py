"""Vision-specific PEFT methods that peft does not provide, each a small module wrapping the frozen backbone.

Every module exposes its typed options (``Options``, a ``MethodOptions`` dataclass with the paper's defaults),
``apply(model, spec, options)``, ``declares(name, model, spec)`` (the parameter names it trains) and a closed-form
trainable-parameter count from the method's definition. This package registers nothing: each method's file in
``adapt/methods/`` (``vpt_shallow.py``, ``ssf.py``, ...) registers it through ``adapt.vision_method``.
"""
