"""Stand-ins for trying the pipeline without published weights or real data, used by the tests and benchmarks
and open to users (as ``numpy.testing`` is): tiny random backbones to register (``backbones``; a study file can
name ``medtransfer.testing.backbones:register_tiny_backbones`` as a plugin to rehearse a study in minutes),
synthetic feature stores and splits written through the real schema (``features``), and simulated studies of
two equal methods for checking a paired test's false-positive rate (``studies``). Synthetic images are
``medtransfer.data.synthetic``. Nothing in the pipeline imports this package.
"""
