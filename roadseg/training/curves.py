"""A run's training curves as a picture, drawn from its metrics.csv: the train loss and the validation measures per
epoch, with the epoch of the chosen checkpoint marked. Every run gets it at its end (finish_run), and
`python main.py plot RUN` draws it again, e.g. while the run still trains.
"""
import os

from roadseg.data import datasets
from roadseg.evaluation import plots
from roadseg.training import fit, run_folder

TRAINING_CURVES_FILE = 'training_curves.png'
# The gid of the chosen epoch's marker on the validation curve.
CHOSEN_MARKER = 'chosen'
LOSS_COLOUR, MEASURE_COLOUR, IOU_COLOUR, CHOSEN_COLOUR = '#b35806', '#1b7837', '#7fbf7b', '#3f3fbf'


def _column(rows, key):
    """(epochs, values) of the rows where `key` has a value."""
    pairs = [(int(row['epoch']), float(row[key])) for row in rows if row.get(key, '') != '']
    return [epoch for epoch, _ in pairs], [value for _, value in pairs]


def training_figure(rows, chosen_epoch, measure_key, measure_name, title):
    """Train loss (left axis) and the validation measure `measure_key` and road IoU (right axis) of metrics.csv's
    `rows`, the chosen epoch marked (a line, and a marker with gid CHOSEN_MARKER on the measure's curve)."""
    figure = plots.new_figure(7.6, 3.8)
    loss_axes = figure.add_subplot()
    epochs, loss = _column(rows, 'train_loss')
    loss_axes.plot(epochs, loss, color=LOSS_COLOUR, label='train loss (left axis)')
    loss_axes.set(xlabel='epoch', ylabel='train loss', title=title)
    loss_axes.set_ylim(bottom=0)
    measure_axes = loss_axes.twinx()
    measure_axes.set(ylabel='validation', ylim=(0, 1.02))
    lines = loss_axes.get_lines()
    for key, name, colour in (('val_' + measure_key, 'validation ' + measure_name, MEASURE_COLOUR),
                              ('val_iou', 'validation road IoU', IOU_COLOUR)):
        epochs, values = _column(rows, key)
        if values and (key == 'val_' + measure_key or measure_key != 'iou'):
            lines += measure_axes.plot(epochs, values, color=colour, label=name + ' (right axis)')
    chosen = {int(row['epoch']): row for row in rows}.get(chosen_epoch)
    if chosen is not None:
        measured = chosen.get('val_' + measure_key, '') != ''
        line = loss_axes.axvline(chosen_epoch, color=CHOSEN_COLOUR, linewidth=0.8,
                                 label='chosen: epoch %d (no validation)' % chosen_epoch)
        if measured:
            line = measure_axes.plot([chosen_epoch], [float(chosen['val_' + measure_key])], 'o', color=CHOSEN_COLOUR,
                                     gid=CHOSEN_MARKER, label='chosen: epoch %d, %s %.3f' % (
                                         chosen_epoch, measure_name, float(chosen['val_' + measure_key])))[0]
        lines.append(line)
    loss_axes.legend(handles=lines, loc='center right', fontsize=8)
    loss_axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def write_training_curves(run, config):
    """Draw the run's training curves into its folder; returns (path, a phrase saying what it shows), or None
    before the first epoch."""
    rows = run.read_metrics()
    if not rows:
        return None
    chosen = fit.chosen_checkpoint(run, config)
    chosen_epoch = chosen[2]['epoch'] if chosen else None
    measure_key, measure_name = fit.selection_measure(datasets.label_format(config.dataset, config.classes))
    title = '%s: %d epochs on %d images, validation on %d' % (os.path.basename(os.path.normpath(run.path)),
                                                             len(rows), len(config.train), len(config.val))
    folder = os.path.join(run.path, run_folder.PLOTS_FOLDER)
    os.makedirs(folder, exist_ok=True)
    path = plots.save_figure(training_figure(rows, chosen_epoch, measure_key, measure_name, title),
                             os.path.join(folder, TRAINING_CURVES_FILE))
    return path, 'train loss and validation %s of %d epochs%s' % (
        measure_name, len(rows), ', epoch %d chosen' % chosen_epoch if chosen_epoch is not None else '')
