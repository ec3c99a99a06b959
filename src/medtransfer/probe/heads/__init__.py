"""Every shipped probe head, one file each; importing this package registers them all.

A head file calls ``probe.registry.register_head(name=..., description=..., make=..., grid=..., ...)``; the
lookups (``get_head``, ``resolve_heads``, ``head_help``) are re-exported here, so that code which finds heads by
name imports this catalogue and sees every entry. The registry itself (``probe.registry``) imports none of them.
Files are imported in the order ``--head all`` fits them.

``logreg``: C is the inverse L2 strength in scikit-learn's convention (objective ``0.5 ||w||^2 + C sum_i sw_i
loss_i`` on preprocessed features): small C, strong penalty. Its whole (task x C) grid is solved at once by the
batched torch solver (``probe.solvers.logreg.fit_logreg_tasks``); ``make`` gives the equivalent scikit-learn
estimator.
"""

# isort: off
from medtransfer.probe.heads import logreg, svm, knn, centroid, ridge, rf, extratrees, hgb, xgb, mlp  # noqa: F401
# isort: on
from medtransfer.probe.registry import HEADS, HeadSpec, get_head, head_help, register_head, resolve_heads

__all__ = ["HEADS", "HeadSpec", "get_head", "head_help", "register_head", "resolve_heads"]
