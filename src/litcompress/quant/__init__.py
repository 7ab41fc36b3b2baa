"""int8 quantization shared by the techniques that make int8 models (QAT, post-training).

* :mod:`~litcompress.quant.fake_quant`: the fake-quantized network that trains or calibrates.
* :mod:`~litcompress.quant.backends`: preparing a network for a backend and converting it to int8.

The int8 artifacts they make are saved, reloaded and measured by deployment
(:mod:`litcompress.deploy.int8`), which imports this package; this package imports nothing of
deployment.
"""
