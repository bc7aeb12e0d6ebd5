"""python main.py infer: which inputs, which output names, and writing overlays without replacing anyone's files.

Inputs are never written to. Outputs are <name>_overlay.png (and <name>_road.png with masks), or for a video
<name>_overlay.mp4 (and <name>_road.mp4; see serving/video.py); two inputs that would share an output name get
distinct ones; an existing file is only replaced when asked (--overwrite).
"""
import collections
import glob
import os

from tqdm import tqdm

from roadseg import atomic, config
from roadseg.errors import DatasetError, OutputError
from roadseg.serving import files, video

IMAGE_SUFFIXES = ('_overlay.png', '_road.png')


DEFAULT_PARENT = 'runs'


def expand_inputs(inputs, extensions=files.IMAGE_EXTENSIONS):
    """Files, folders (their files with `extensions`, not recursive) and glob patterns -> sorted paths.

    An input that matches nothing raises DatasetError naming it.
    """
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            found = [os.path.join(item, name) for name in sorted(os.listdir(item))
                     if name.lower().endswith(extensions)]
        elif os.path.exists(item):
            found = [item]
        else:
            found = sorted(glob.glob(item))
        if not found:
            raise DatasetError('nothing to run on for %r: give image or video files, folders or glob patterns'
                               % item)
        paths.extend(found)
    return sorted(set(os.path.normpath(path) for path in paths))


def output_stems(paths):
    """{input path: output stem}, distinct for every input: x.png and x.jpg give x_png and x_jpg."""
    def by(key):
        groups = collections.defaultdict(list)
        for path in paths:
            groups[key(path)].append(path)
        return groups

    keys = [lambda p: os.path.splitext(os.path.basename(p))[0],
            lambda p: os.path.basename(p).replace('.', '_'),
            lambda p: '%s_%s' % (os.path.basename(os.path.dirname(os.path.abspath(p))),
                                 os.path.basename(p).replace('.', '_'))]
    stems = {}
    for path in paths:
        for key in keys:
            if len(by(key)[key(path)]) == 1:
                stems[path] = key(path)
                break
        else:
            stems[path] = '%s_%d' % (keys[-1](path), sorted(paths).index(path))
    return stems


def planned_outputs(paths, out_dir, suffixes_of):
    """{input path: [output paths]}, with the suffixes suffixes_of(path) gives (e.g. ['_overlay.png'])."""
    stems = output_stems(paths)
    return {path: [os.path.join(out_dir, stems[path] + suffix) for suffix in suffixes_of(path)] for path in paths}


def check_outputs(plan, inputs, out_dir, overwrite):
    """Refuse, before any work, to write over an input, into a run folder, or over existing files unasked."""
    if os.path.isfile(os.path.join(out_dir, config.RUN_CONFIG_FILE)):
        raise OutputError('--out %s is a run folder: its files belong to its model. Choose another folder'
                          % out_dir)
    inputs = {os.path.realpath(path) for path in inputs}
    outputs = [output for targets in plan.values() for output in targets]
    clobbered = [output for output in outputs if os.path.realpath(output) in inputs]
    if clobbered:
        raise OutputError('%s is an input; outputs never replace inputs. Choose another --out' % clobbered[0])
    existing = [output for output in outputs if os.path.exists(output)]
    if existing and not overwrite:
        raise OutputError('%d output file(s) already exist in %s (e.g. %s); pass --overwrite to replace them, or '
                          'choose another --out' % (len(existing), out_dir, os.path.basename(existing[0])))


def infer(args):
    """Overlays (and masks) of images and videos at their own size; unreadable ones are listed and skipped
    (exit status 1)."""
    paths = expand_inputs(args.inputs, files.IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS)
    videos = {path for path in paths if video.is_video(path)}
    predict = files.open_model(args.model)
    runs_existed = os.path.isdir(DEFAULT_PARENT)
    out_dir = args.out or atomic.new_timestamped_folder(DEFAULT_PARENT)
    failed = []

    def report_unreadable(path, error):
        failed.append(path)
        tqdm.write('skipped %s: %s' % (path, error))

    try:
        os.makedirs(out_dir, exist_ok=True)
        plan = planned_outputs(paths, out_dir, lambda path: video.OUTPUT_SUFFIXES if path in videos
                               else IMAGE_SUFFIXES)
        check_outputs(plan, paths, out_dir, args.overwrite)
        images_written = files.write_image_predictions(
            predict, {path: plan[path] for path in plan if path not in videos}, args.masks, report_unreadable)
        videos_written = files.write_video_predictions(
            predict, {path: plan[path] for path in videos}, args.masks, report_unreadable)
    finally:
        predict.close()
        if args.out is None and not os.listdir(out_dir):  # a failed infer leaves no empty runs/<timestamp>
            os.rmdir(out_dir)
            if not runs_existed:
                os.rmdir(DEFAULT_PARENT)
    counts = [(images_written, len(paths) - len(videos), 'images'), (videos_written, len(videos), 'videos')]
    print('infer: %s written to %s%s' % (' and '.join('%d of %d %s' % count for count in counts if count[1]), out_dir,
                                         '; %d unreadable input(s) skipped' % len(failed) if failed else ''))
    if failed:
        raise SystemExit(1)
