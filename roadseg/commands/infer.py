"""python main.py infer: which inputs, which output names, and writing overlays without replacing anyone's files.

Inputs are never written to. Outputs are <name>_overlay.png (and <name>_road.png with masks, <name>_bev.png with
--bev), or for a video <name>_overlay.mp4 (and <name>_road.mp4; see serving/video.py); output names are one-to-one
over any set of inputs (output_stems); an existing file is only replaced when asked (--overwrite); nothing is
written inside a run folder, and names the file system would refuse are refused before any work.
"""
import collections
import glob
import os

from tqdm import tqdm

from roadseg import atomic, config
from roadseg.data import images
from roadseg.errors import DatasetError, OutputError
from roadseg.evaluation import bev
from roadseg.serving import files, video

IMAGE_SUFFIXES = ('_overlay.png', '_road.png')
BEV_SUFFIX = '_bev.png'


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


def _candidate_stems(path):
    """The stems `path` may get, plainest first: its name without the extension, its name with the dots made
    underscores, then its folder's name too."""
    name = os.path.basename(path)
    folder = os.path.basename(os.path.dirname(os.path.abspath(path)))
    return [os.path.splitext(name)[0], name.replace('.', '_'), '%s_%s' % (folder, name.replace('.', '_'))]


def output_stems(paths):
    """{input path: output stem}, one-to-one over any set of paths, whatever their order: x.png and x.jpg give
    x_png and x_jpg.

    Stems are given level by level (the plainest first for every input, in sorted order), each only if no other
    input has the same candidate at that level and no input has taken it yet; what is left gets its last
    candidate with -2, -3, ... Names are compared case-folded, so that they stay distinct on case-insensitive file
    systems too. No output suffix ends another (see check_suffixes), so distinct stems give distinct files.
    """
    paths = sorted(set(paths))
    candidates = {path: _candidate_stems(path) for path in paths}
    stems, taken = {}, set()
    for level in range(len(_candidate_stems('x'))):
        counts = collections.Counter(candidates[path][level].casefold() for path in paths)
        for path in paths:
            stem = candidates[path][level]
            if path not in stems and counts[stem.casefold()] == 1 and stem.casefold() not in taken:
                stems[path] = stem
                taken.add(stem.casefold())
    for path in paths:
        number = 2
        while path not in stems:
            stem = '%s-%d' % (candidates[path][-1], number)
            if stem.casefold() not in taken:
                stems[path] = stem
                taken.add(stem.casefold())
            number += 1
    return stems


def check_suffixes(suffixes):
    """Distinct stems give distinct names only if no suffix is the end of another: assert it."""
    suffixes = {suffix.casefold() for suffix in suffixes}
    assert not any(a != b and a.endswith(b) for a in suffixes for b in suffixes), suffixes


def planned_outputs(paths, out_dir, suffixes_of):
    """{input path: [output paths]}, with the suffixes suffixes_of(path) gives (e.g. ['_overlay.png'])."""
    stems = output_stems(paths)
    check_suffixes(IMAGE_SUFFIXES + (BEV_SUFFIX,) + video.OUTPUT_SUFFIXES)
    return {path: [os.path.join(out_dir, stems[path] + suffix) for suffix in suffixes_of(path)] for path in paths}


def run_folder_around(path):
    """The run folder (a folder holding run.json) that `path` is or is inside, or None."""
    folder = os.path.realpath(path)
    while True:
        if os.path.isfile(os.path.join(folder, config.RUN_CONFIG_FILE)):
            return folder
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def nearest_existing(path):
    """`path`, or the nearest of its parents that exists."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def check_out_folder(out_dir, flag='--out'):
    """Refuse, in one line, an --out that is a file or lies under one, is inside a run folder, or cannot be
    written."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise OutputError('%s %s is a file; give a folder (new or existing) for the outputs' % (flag, out_dir))
    existing = nearest_existing(out_dir)
    if not os.path.isdir(existing):
        raise OutputError('%s %s cannot be a folder: %s is a file; give a folder for the outputs'
                          % (flag, out_dir, existing))
    run = run_folder_around(existing)
    if run is not None and run == os.path.realpath(out_dir):
        raise OutputError('%s %s is a run folder: its files belong to its model (finish replaces them). Choose '
                          'another folder' % (flag, out_dir))
    if run is not None:
        raise OutputError('%s %s is inside the run folder %s: its files belong to its model (finish replaces '
                          'them). Choose a folder outside it' % (flag, out_dir, run))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError('cannot write in %s (%s); choose a writable %s'
                          % (existing, atomic.why_unwritable(existing), flag))


def check_name_lengths(plan, out_dir):
    """Refuse, before any work, an output whose name (or path) is longer than the file system takes. (Its
    temporary name, atomic.STAGING_PREFIX + 8 characters + its extension, is always shorter.)"""
    existing = nearest_existing(out_dir)
    name_max, path_max = os.pathconf(existing, 'PC_NAME_MAX'), os.pathconf(existing, 'PC_PATH_MAX')
    for path, targets in sorted(plan.items()):
        for target in targets:
            name = os.path.basename(target)
            extra = len(os.fsencode(name)) - name_max
            if extra > 0:
                raise OutputError('%s gives the output name %s..., %d bytes longer than the file system of %s takes '
                                  '(%d bytes); rename or link the input with a name at least %d bytes shorter and '
                                  'run again' % (path, name[:40], extra, existing, name_max, extra))
            if len(os.fsencode(os.path.abspath(target))) >= path_max:
                raise OutputError('%s gives an output path of more than %d bytes in %s; choose a shorter --out or a '
                                  'shorter input name' % (path, path_max, out_dir))


def check_outputs(plan, inputs, out_dir, overwrite, flag='--out'):
    """Refuse, before any work, to write over an input, into a run folder, over existing files unasked, or under
    names the file system does not take (`flag`: the command's name for the output folder)."""
    check_out_folder(out_dir, flag)
    check_name_lengths(plan, out_dir)
    inputs = {os.path.realpath(path) for path in inputs}
    outputs = [output for targets in plan.values() for output in targets]
    clobbered = [output for output in outputs if os.path.realpath(output) in inputs]
    if clobbered:
        raise OutputError('%s is an input; outputs never replace inputs. Choose another %s' % (clobbered[0], flag))
    existing = [output for output in outputs if os.path.lexists(output)]
    folders = [output for output in existing if os.path.isdir(output)]
    if folders:
        raise OutputError('%s is a folder where an output file goes; move it away or choose another %s'
                          % (folders[0], flag))
    if existing and not overwrite:
        raise OutputError('%d output file(s) already exist in %s (e.g. %s); pass --overwrite to replace them, or '
                          'choose another %s' % (len(existing), out_dir, os.path.basename(existing[0]), flag))


def disagreements(paths, videos):
    """A line for each input whose name and content disagree (a video named .png, a PNG named .mp4): it is read
    as what its content is."""
    for path in paths:
        named_video = path.lower().endswith(video.VIDEO_EXTENSIONS)
        named_image = path.lower().endswith(files.IMAGE_EXTENSIONS)
        if path in videos and named_image:
            yield '%s is a video by its content (its name says image): read as a video' % path
        elif path not in videos and named_video:
            yield '%s is an image by its content (its name says video): read as an image' % path


def check_bev_inputs(paths, videos):
    """--bev needs images with KITTI calibration files: refuse videos and images without one, in one line."""
    if videos:
        raise DatasetError('--bev maps images with KITTI calibration files and %s is a video; leave --bev out for '
                           'videos' % sorted(videos)[0])
    missing = bev.missing_calibrations(paths)
    if missing:
        raise DatasetError('--bev needs the calibration file of each image (<split>/calib/<name>.txt beside '
                           '<split>/image_2/, as in data_road.zip) and %d of %d images have none: %s'
                           % (len(missing), len(paths), bev.describe_missing(missing)))


def bev_writer(predict, plan):
    """Write an image's road probability in the bird's-eye view, as 8-bit grey, to the last output of its plan."""
    def write(path, image, probabilities):
        mapping = bev.BevMapping.of_image(path, image.shape)
        atomic.write_image(plan[path][-1], images.probability_image(mapping(probabilities[..., predict.road_class])))
    return write


def infer(args):
    """Overlays (and masks) of images and videos at their own size; unreadable ones are listed and skipped
    (exit status 1)."""
    paths = expand_inputs(args.inputs, files.IMAGE_EXTENSIONS + video.VIDEO_EXTENSIONS)
    videos = {path for path in paths if video.is_video(path)}
    if args.bev:
        check_bev_inputs(paths, videos)
    if args.out is not None:
        check_out_folder(args.out)
    runs_existed = os.path.isdir(DEFAULT_PARENT)
    out_created = args.out is None or not os.path.exists(args.out)
    out_dir = args.out or atomic.new_timestamped_folder(DEFAULT_PARENT)
    failed, predict = [], None

    def report_unreadable(path, error):
        failed.append(path)
        tqdm.write('skipped %s: %s' % (path, error))

    try:
        plan = planned_outputs(paths, out_dir, lambda path: video.OUTPUT_SUFFIXES if path in videos
                               else IMAGE_SUFFIXES + (BEV_SUFFIX,) * args.bev)
        check_outputs(plan, paths, out_dir, args.overwrite)
        predict = files.open_model(args.model)
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as error:
            raise OutputError('cannot create --out %s (%s); choose a folder you can write to'
                              % (out_dir, error.strerror)) from error
        for line in disagreements(paths, videos):
            tqdm.write('infer: ' + line)
        images_written = files.write_image_predictions(
            predict, {path: plan[path] for path in plan if path not in videos}, args.masks, report_unreadable,
            bev_writer(predict, plan) if args.bev else None)
        videos_written = files.write_video_predictions(
            predict, {path: plan[path] for path in videos}, args.masks, report_unreadable)
    finally:
        if predict is not None:
            predict.close()
        if out_created and os.path.isdir(out_dir) and not os.listdir(out_dir):  # a failed infer leaves no empty
            os.rmdir(out_dir)                                                   # folder it made
            if args.out is None and not runs_existed:
                os.rmdir(DEFAULT_PARENT)
    counts = [(images_written, len(paths) - len(videos), 'images'), (videos_written, len(videos), 'videos')]
    print('infer: %s written to %s%s' % (' and '.join('%d of %d %s' % count for count in counts if count[1]), out_dir,
                                         '; %d unreadable input(s) skipped' % len(failed) if failed else ''))
    if failed:
        raise SystemExit(1)
