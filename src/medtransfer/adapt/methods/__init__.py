"""The adaptation methods, one file each, named after the method (``lp-ft`` -> ``lp_ft.py``); importing this
package registers them all in ``adapt.registry.METHODS``, in the order ``medtransfer methods`` lists them.

Adding a method is adding its file here: it registers itself with ``register_method`` /
``register_peft_method`` / ``register_vision_method`` (keywords only), its own options dataclass and peft config
maker sit in it, and ``medtransfer.registry.import_entries`` imports every file of the folder. A file registers
one method; the only exception is a method's rank presets: ``lora.py`` and ``vera.py`` also register
``<base>-r4`` / ``-r8`` / ``-r16`` (``adapt.rank_presets.register_rank_presets``) right after their base, so a
preset is found in its base method's file. The machinery the files share is beside this package
(``adapt.targets``, ``adapt.freezing``, ``adapt.peft_method``, ``adapt.vision_method``, ``adapt.rank_presets``,
the modules of ``adapt.vision``) and imports no method.

Code that looks a method up by name imports this package (``from medtransfer.adapt.methods import get_method``);
code that needs only the ``AdaptMethod`` type imports ``adapt.registry``.
"""

from medtransfer.adapt.peft_method import register_peft_method
from medtransfer.adapt.registry import METHODS, AdaptMethod, get_method, method_table, register_method
from medtransfer.registry import import_entries

# the order ``medtransfer methods`` lists them (registration order): the baselines and the methods that need no
# peft; peft's tuners (lora and vera each followed by their rank presets); the vision methods peft does not provide
# (implemented in adapt.vision). A method file not named here comes after these, by file name.
ORDER = (
    "fft", "lp", "lp_ft", "bitfit", "ln_tune",
    "lora", "dora", "vera", "ia3", "loha", "lokr", "oft", "boft",
    "adalora", "fourierft", "hra", "vblora", "randlora", "shira", "c3a", "miss", "hira", "delora", "gralora",
    "vpt_shallow", "vpt_deep", "adaptformer", "adapter", "ssf", "fact_tt", "fact_tk", "bn_tune",
)  # fmt: skip
import_entries(__name__, __path__, ORDER)

__all__ = ["METHODS", "AdaptMethod", "get_method", "method_table", "register_method", "register_peft_method"]
