"""python main.py plot RUN: draw a run's training curves again from its metrics.csv (training/curves.py), also while
it trains: the picture is written beside the run's files, atomically, and nothing else is touched."""
from roadseg.errors import RunFolderError
from roadseg.training import curves, run_folder


def plot(args):
    run = run_folder.RunFolder.existing(args.run)
    drawn = curves.write_training_curves(run, run.read_config())
    if drawn is None:
        raise RunFolderError('%s has no epoch in its %s yet: plot it once its first epoch is done'
                             % (args.run, run_folder.METRICS_FILE))
    path, shown = drawn
    print('plot: %s, in %s' % (shown, path))
