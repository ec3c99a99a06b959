"""Random forest (200 trees), its grid searched by successive halving over trees."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from medtransfer.probe.registry import register_head
from medtransfer.probe.solvers.forests import forest_head

register_head(**forest_head("rf", RandomForestClassifier, "random forest"))
