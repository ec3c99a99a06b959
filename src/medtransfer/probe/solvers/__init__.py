"""How the heads fit: the batched solvers behind ``probe/heads/`` (machinery, no head registers here).

``logreg`` fits the linear heads' whole (task x C) grid through the torch solver (``batched``, ``solver``,
``hinge_newton``); ``neighbors``, ``ridge``, ``mlp``, ``forests`` and ``boosting`` are ``GridSolver``s for
``probe.grid_driver`` (``prepared`` and ``stacked``: the per-job preprocessing they share). Each imports torch or
its library when a head first fits, never when the heads are listed.
"""
