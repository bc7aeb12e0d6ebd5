"""Pictures of a model's road measures: the precision-recall curve of each KITTI category and of all images with
the MaxF point marked, and a sheet of the images the model does worst on. Drawn on matplotlib's Agg canvas (no
display, no pyplot state) and written through the one writer; the training curves (training/curves.py) use the
same figure helpers.
"""
import io
import math
import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from roadseg import atomic
from roadseg.data import images
from roadseg.evaluation import road_metrics, scoring

PR_CURVE_FILE = 'pr_curve.png'
BEV_PR_CURVE_FILE = 'pr_curve_bev.png'
WORST_IMAGES_FILE = 'worst_images.png'
WORST_IMAGES = 6
DPI = 100
TITLE_WIDTH = 64  # characters per line of a title (a longer one wraps)
# The gid of the MaxF marker of a curve: MAXF_MARKER + the curve's name ('all', 'um', ...).
MAXF_MARKER = 'maxf:'


def new_figure(width, height):
    """A figure of width x height inches on an Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path):
    """Write `figure` as a PNG at `path`, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png')
    atomic.write_file(path, buffer.getvalue())
    return path


def pr_figure(metrics, title, all_name='all'):
    """The precision-recall curve of every category of `metrics` (a RoadMetrics) and of all its images (named
    `all_name`), each with its MaxF point marked (gid MAXF_MARKER + name); None when no image had road."""
    curves = [(all_name, metrics.pr_curve())] + [(category, metrics.pr_curve(category))
                                                 for category in metrics.categories()]
    curves = [(name, curve) for name, curve in curves if curve is not None]
    if not curves:
        return None
    figure = new_figure(6.4, 5.6)
    axes = figure.add_subplot()
    for name, (precision, recall, f_measure, best) in curves:
        found = recall > 0  # thresholds that find no road have no precision: left out of the line
        every = name == all_name  # drawn black and on top of the categories
        line, = axes.plot(recall[found], precision[found], linewidth=2 if every else 1.2, zorder=3 if every else 2,
                          color='black' if every else None,
                          label='%s: MaxF %.2f%% at p >= %.3f' % (name, 100 * f_measure[best], road_metrics.THRESHOLDS[best]))
        axes.plot([recall[best]], [precision[best]], 'o', markersize=7, color=line.get_color(), zorder=4,
                  markeredgecolor='black' if not every else 'white', gid=MAXF_MARKER + name)
    axes.set(xlabel='recall', ylabel='precision', xlim=(0, 1.01), ylim=(0, 1.01))
    axes.set_title(textwrap.fill(title, TITLE_WIDTH), fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend(loc='lower left', title='o: MaxF point')
    figure.tight_layout()
    return figure


def worst_images_figure(worst, title):
    """One sheet of the images of `worst` (scoring.Scored), each painted with its false positives and false
    negatives and titled with its name and road IoU."""
    columns = 2 if len(worst) > 1 else 1
    rows = math.ceil(len(worst) / columns)
    height, width = worst[0].image.shape[:2]
    figure = new_figure(6 * columns, rows * (6 * height / width + 0.4) + 0.9)
    for index, one in enumerate(worst):
        axes = figure.add_subplot(rows, columns, index + 1)
        axes.imshow(images.error_overlay(one.image, one.road_probability > images.ROAD_THRESHOLD, one.road,
                                         one.labelled))
        axes.set_title('%s  IoU %.3f' % (os.path.basename(one.path), one.iou), fontsize=10)
        axes.axis('off')
    legend = [Patch(color=np.asarray(colour) / 255, label=label) for colour, label in (
        (images.OVERLAY_COLOR, 'road found'), (images.FALSE_POSITIVE_COLOR, 'false positive (found, not road)'),
        (images.FALSE_NEGATIVE_COLOR, 'false negative (road missed)'))]
    figure.legend(handles=legend, loc='lower center', ncol=3, fontsize=9, frameon=False)
    figure.suptitle(textwrap.fill(title, 2 * TITLE_WIDTH), fontsize=11)
    figure.tight_layout(rect=(0, 0.05, 1, 0.97))
    return figure


def write_evaluation_plots(out_dir, predict, pairs, to_onehot, metrics, which, bev_metrics=None):
    """The PR curves (of the bird's-eye view too with `bev_metrics`) and the worst images' sheet of the model
    `predict` scored on `pairs` into `metrics` (scoring.evaluate), into `out_dir`; returns the paths written.
    `which` says what the images are, for the titles."""
    figures = [(PR_CURVE_FILE, pr_figure(metrics, 'Road precision-recall, perspective: %s' % which))]
    if bev_metrics is not None:
        figures.append((BEV_PR_CURVE_FILE, pr_figure(bev_metrics, "Road precision-recall, bird's-eye view: %s"
                                                     % which, all_name='URBAN')))
    worst = scoring.worst_images(predict, pairs, to_onehot, metrics.image_iou, WORST_IMAGES)
    if worst:
        figures.append((WORST_IMAGES_FILE, worst_images_figure(
            worst, 'The %d images of lowest road IoU (p > %g): %s' % (len(worst), images.ROAD_THRESHOLD, which))))
    return [save_figure(figure, os.path.join(out_dir, name)) for name, figure in figures if figure is not None]


def evaluation_plot_files():
    """The names write_evaluation_plots may write."""
    return PR_CURVE_FILE, BEV_PR_CURVE_FILE, WORST_IMAGES_FILE
