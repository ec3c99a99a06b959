"""The adaptation methods, one file each, named after the method (``lp-ft`` -> ``lp_ft.py``); importing this
package registers them all in ``adapt.registry.METHODS``, in the order ``medtransfer methods`` lists them.

Adding a method is adding its file here (it registers itself with ``register_method`` / ``register_peft_method``
/ ``register_vision_method``, keywords only; its own options dataclass and peft config maker sit in it) and one
import line below. A file registers one method; the only exception is a method's rank presets: ``lora.py`` and
``vera.py`` also register ``<base>-r4`` / ``-r8`` / ``-r16`` (``adapt.rank_presets.register_rank_presets``) right
after their base, so a preset is found in its base method's file. The machinery the files share is beside this
package (``adapt.targets``, ``adapt.freezing``, ``adapt.peft_method``, ``adapt.vision_method``,
``adapt.rank_presets``, the modules of ``adapt.vision``) and imports no method.

Code that looks a method up by name imports this package (``from medtransfer.adapt.methods import get_method``);
code that needs only the ``AdaptMethod`` type imports ``adapt.registry``.
"""

from medtransfer.adapt.peft_method import register_peft_method
from medtransfer.adapt.registry import METHODS, AdaptMethod, get_method, method_table, register_method

# the import order is the registration order, which is the listing order
# isort: off
# baselines and the parameter-efficient methods that need no peft
from medtransfer.adapt.methods import fft, lp, lp_ft, bitfit, ln_tune  # noqa: F401
# peft's tuners (lora and vera each followed by their rank presets)
from medtransfer.adapt.methods import lora, dora, vera, ia3, loha, lokr, oft, boft  # noqa: F401
from medtransfer.adapt.methods import adalora, fourierft, hra, vblora, randlora, shira, c3a, miss, hira  # noqa: F401
from medtransfer.adapt.methods import delora, gralora  # noqa: F401
# the vision methods peft does not provide (implemented in adapt.vision)
from medtransfer.adapt.methods import vpt_shallow, vpt_deep, adaptformer, adapter, ssf  # noqa: F401
from medtransfer.adapt.methods import fact_tt, fact_tk, bn_tune  # noqa: F401
# isort: on

__all__ = ["METHODS", "AdaptMethod", "get_method", "method_table", "register_method", "register_peft_method"]
