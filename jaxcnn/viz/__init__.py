"""Pictures of what a CNN does and how its training went (matplotlib, no display needed).

Every ``plot_*`` function builds a ``matplotlib.figure.Figure`` of an exact
pixel size, writes it as PNG when given ``path=`` and returns it. Image grids
(misclassified examples, filters, feature maps, kernel demos, augmentation
previews) all go through one helper, ``image_grid``.

Examples:
    >>> import numpy as np
    >>> from jaxcnn import viz
    >>> figure = viz.image_grid([np.zeros((8, 8))] * 4, num_cols=2)
    >>> viz.png_bytes(figure)[:4]
    b'\\x89PNG'
"""

from jaxcnn.viz._figures import (
    grid_size_px,
    image_grid,
    new_figure,
    png_bytes,
    save_png,
    save_png_bytes,
)
from jaxcnn.viz.classification import (
    confusion_matrix,
    misclassified_indices,
    plot_confusion_matrix,
    plot_misclassified,
)
from jaxcnn.viz.curves import MetricsLog, plot_training_curves, read_metrics
from jaxcnn.viz.demos import plot_augmentation_preview, plot_kernel_demo
from jaxcnn.viz.filters import (
    conv_kernels,
    feature_maps,
    first_layer_filters,
    plot_feature_maps,
    plot_filters,
)

__all__ = [
    "MetricsLog",
    "confusion_matrix",
    "conv_kernels",
    "feature_maps",
    "first_layer_filters",
    "grid_size_px",
    "image_grid",
    "misclassified_indices",
    "new_figure",
    "png_bytes",
    "plot_augmentation_preview",
    "plot_confusion_matrix",
    "plot_feature_maps",
    "plot_filters",
    "plot_kernel_demo",
    "plot_misclassified",
    "plot_training_curves",
    "read_metrics",
    "save_png",
    "save_png_bytes",
]
