"""What a probe run fits, typed and checked once: the choices travel together from the CLI (or a notebook) to
every head, so no function passes them one by one."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from medtransfer.errors import MedtransferError
from medtransfer.probe.features import parse_preprocess
from medtransfer.probe.threshold import check_rule
from medtransfer.splits.tasks import Task
from medtransfer.vocabulary import CLASS_WEIGHTS, EMBEDDING_KINDS, REGIMES, TUNING, UNITS


@dataclass(frozen=True)
class ProbeOptions:
    """The choices of one ``run_probe`` call; each is checked against ``medtransfer.vocabulary`` on creation."""

    heads: tuple[str, ...] = ("logreg",)  # registered head names, or ("all",)
    embeddings: tuple[str, ...] = ("default",)  # "default" = the store's ``features``; else features_<kind>
    regimes: tuple[str, ...] = ("full", "fewshot")  # of vocabulary.REGIMES
    fractions: tuple[float, ...] = ()  # label fractions to run (the splits file must hold them); () = all
    class_weight: str = "balanced"  # of vocabulary.CLASS_WEIGHTS
    preprocess: str = "standardize"  # l2, standardize, pcaN, none joined by "+" (probe.features)
    threshold: str = "0.5"  # "0.5" or "val-mcc" (probe.threshold)
    tune: str = "val"  # of vocabulary.TUNING: the fold's val rows, or inner CV on the training rows
    inner_folds: int = 3  # inner CV folds for tune="cv" (and "budget")
    unit: str = "image"  # of vocabulary.UNITS: metrics per test image, or per patient (mean of its images)
    device: str = "auto"  # for the batched logistic-regression solver (device.resolve_device)
    halving: bool = True  # successive halving over the tree heads' grids (probe.halving)
    workers: int = 1  # processes the tasks of a tree head are spread over (probe.workers); 0: one per CPU core
    steps: tuple[str, ...] = field(init=False)  # ``preprocess`` parsed
    rule: str = field(init=False)  # ``threshold`` normalized

    def __post_init__(self) -> None:
        as_tuple = {"heads": self.heads, "embeddings": self.embeddings or "default", "regimes": self.regimes,
                    "fractions": self.fractions or ()}
        for name, value in as_tuple.items():
            object.__setattr__(self, name, (value,) if isinstance(value, str) else tuple(value))
        if self.class_weight is None:  # the Python API has always taken None for "no weighting"
            object.__setattr__(self, "class_weight", "none")
        if self.class_weight not in CLASS_WEIGHTS:
            raise MedtransferError(f"--class-weight must be {' or '.join(CLASS_WEIGHTS)}, got {self.class_weight!r}")
        if self.tune not in TUNING:
            raise MedtransferError(f"--tune must be {' or '.join(TUNING)}, got {self.tune!r}")
        if self.unit not in UNITS:
            raise MedtransferError(f"--unit must be {' or '.join(UNITS)}, got {self.unit!r}")
        unknown = sorted(set(self.regimes) - set(REGIMES))
        if unknown:
            raise MedtransferError(f"unknown regime(s) {unknown}; choose from {', '.join(REGIMES)}")
        odd = [e for e in self.embeddings if e not in ("default", "features", *EMBEDDING_KINDS)]
        if odd:  # refused here, before any progress bar or fit
            raise MedtransferError(f"unknown --embedding {odd[0]!r}; choose default, {', '.join(EMBEDDING_KINDS)}")
        if self.workers < 0:
            raise MedtransferError(f"--workers must be 0 (one per CPU core) or more, got {self.workers}")
        if self.tune == "cv" and self.inner_folds < 2:
            raise MedtransferError(f"--inner-folds must be at least 2 for --tune cv, got {self.inner_folds}")
        object.__setattr__(self, "steps", parse_preprocess(self.preprocess))
        object.__setattr__(self, "rule", check_rule(self.threshold))

    @classmethod
    def create(cls, **choices: object) -> ProbeOptions:
        """Options from keywords, naming the known ones when one is misspelt (a user error, not a TypeError)."""
        known = [f.name for f in fields(cls) if f.init]
        unknown = sorted(set(choices) - set(known))
        if unknown:
            raise MedtransferError(f"unknown probe option(s) {unknown}; known: {', '.join(known)}")
        return cls(**choices)

    @property
    def balanced(self) -> bool:
        return self.class_weight == "balanced"

    def tuning_for(self, task: Task) -> str:
        """Where this task's hyperparameters are chosen, "val" or "cv": ``budget`` tunes a few-shot or fraction
        task by inner CV on its own training rows, so that it uses no labels beyond its budget."""
        if self.tune == "budget":
            return "val" if task.regime == "full" else "cv"
        return self.tune

    def settings(self, tuning: str | None = None) -> dict[str, str]:
        """The results-table columns that record these choices on every row (``tuning``: the task's)."""
        tuning = tuning or self.tune
        rule = self.rule if tuning == "val" or self.rule == "0.5" else f"{self.rule} (inner cv)"
        return {"preprocessing": "+".join(self.steps) or "none", "class_weight": self.class_weight,
                "threshold_rule": rule, "tuning": tuning, "unit": self.unit}
