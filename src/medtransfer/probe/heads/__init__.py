"""Every shipped probe head, one file each; importing this package registers them all.

A head file calls ``probe.registry.register_head(name=..., description=..., make=..., grid=..., ...)``; adding a
head is adding its file here (``medtransfer.registry.import_entries`` finds it). The lookups (``get_head``,
``resolve_heads``, ``head_help``) are re-exported, so that code which finds heads by name imports this catalogue
and sees every entry; the registry itself (``probe.registry``) imports none of them.
"""

from medtransfer.probe.registry import HEADS, HeadSpec, get_head, head_help, register_head, resolve_heads
from medtransfer.registry import import_entries

# the order ``--head all`` fits them: the batched linear and neighbour heads first, the tree heads last; a head
# not named here comes after these, by file name
ORDER = ("logreg", "svm", "knn", "centroid", "ridge", "rf", "extratrees", "hgb", "xgb", "mlp")
import_entries(__name__, __path__, ORDER)

__all__ = ["HEADS", "HeadSpec", "get_head", "head_help", "register_head", "resolve_heads"]
