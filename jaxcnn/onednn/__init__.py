"""oneDNN's convolution kernels inside jit, through XLA's FFI (CPU only, optional).

``build`` compiles and registers the small C++ binding on first use; ``ffi_conv.conv2d``
is the differentiable convolution. Most code never calls these directly: layers go through
:func:`jaxcnn.conv_backend.conv_general_dilated`, which picks oneDNN or XLA.
"""

from jaxcnn.onednn.build import OnednnUnavailable, available, require, unavailable_reason
from jaxcnn.onednn.ffi_conv import conv2d

__all__ = ["OnednnUnavailable", "available", "conv2d", "require", "unavailable_reason"]
