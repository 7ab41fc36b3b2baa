"""Deployment: export a run's network (ONNX, OpenVINO, torch programs), load any artifact, predict
on image files and evaluate on a data set. The ``litcompress`` command (:mod:`litcompress.cli`)
drives it; runs use it for ``export=[...]``."""
