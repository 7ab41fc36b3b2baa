"""int8 quantization shared by the techniques that make int8 models (QAT, post-training).

* :mod:`~litcompress.quant.fake_quant`: the fake-quantized network that trains or calibrates.
* :mod:`~litcompress.quant.backends`: preparing a network for a backend and converting it to int8.
* :mod:`~litcompress.quant.artifact`: the int8 artifact: save, reload, evaluate and measure.
"""
