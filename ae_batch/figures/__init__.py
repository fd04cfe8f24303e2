"""Figures for the report and MLflow.

One entry point, ``make_study_figures`` (module ``study``), writes every figure of a study into
``<study_dir>/figures/<kind>/<dataset>__....png``; ``figure_dataset(path)`` recovers a figure's dataset.
``plot_reconstructions`` draws the per-member MRI reconstruction figure (evaluate stage).

Modules, one job each: ``common`` (saving, naming, row selection, styles), ``metrics`` (metric vs batch
size), ``curves`` (learning curves), ``projections`` (latent PCA), ``losses`` (per-subject loss),
``reconstructions`` (MRI slices), ``study`` (reading member files, the entry point). Every
``*_figure`` function returns a matplotlib ``Figure`` (tests inspect it); every ``plot_*`` function
saves one atomically as a PNG without time or software metadata and closes it.
"""

from ae_batch.figures.common import KINDS, counted_rows, figure_dataset, figure_name, save_figure
from ae_batch.figures.curves import learning_curves_figure, plot_learning_curves
from ae_batch.figures.losses import plot_recon_loss_distributions, recon_loss_figure
from ae_batch.figures.metrics import (
    METRICS,
    applicable_metrics,
    bootstrap_ci,
    init_noise_scale,
    metric_figure,
    plot_metric_vs_batch_size,
    seed_summary,
)
from ae_batch.figures.projections import latent_projections_figure, pca_2d, plot_latent_projections
from ae_batch.figures.reconstructions import (
    N_SUBJECTS,
    mid_slices,
    plot_reconstructions,
    reconstructions_figure,
)
from ae_batch.figures.study import make_study_figures

__all__ = [
    "KINDS",
    "METRICS",
    "N_SUBJECTS",
    "applicable_metrics",
    "bootstrap_ci",
    "counted_rows",
    "figure_dataset",
    "figure_name",
    "init_noise_scale",
    "latent_projections_figure",
    "learning_curves_figure",
    "make_study_figures",
    "metric_figure",
    "mid_slices",
    "pca_2d",
    "plot_latent_projections",
    "plot_learning_curves",
    "plot_metric_vs_batch_size",
    "plot_reconstructions",
    "plot_recon_loss_distributions",
    "reconstructions_figure",
    "recon_loss_figure",
    "save_figure",
    "seed_summary",
]
