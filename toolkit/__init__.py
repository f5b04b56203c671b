"""optkit: take a trained PyTorch classifier to a calibrated, benchmarked, device-ready bundle.

    import toolkit
    result = toolkit.compress("model.pt2", data="val.npz", device="jetson-orin-nano")

Importing this package imports no runtime (onnxruntime, openvino, tensorrt); they load on use.
"""
from __future__ import annotations

__version__ = "0.1.0"


def compress(*args, **kwargs):
    """See toolkit.pipeline.compress.compress (the same function `optkit compress` calls)."""
    from toolkit.pipeline.compress import compress as _compress

    return _compress(*args, **kwargs)


def verify(folder, **kwargs):
    """See toolkit.output.bundle.verify (the same function `optkit verify` calls)."""
    from toolkit.output.bundle import verify as _verify

    return _verify(folder, **kwargs)


def sign(folder, key, **kwargs):
    """See toolkit.output.signing.sign (the same function `optkit sign` calls; needs optkit[sign])."""
    from toolkit.output.signing import sign as _sign

    return _sign(folder, key, **kwargs)
