"""Tests of where python main.py infer writes (commands/infer.py): output names one-to-one over any inputs, names
the file system would refuse, and --out folders that are files or inside a run folder, all refused before any
work in one line.
"""
import os
import random

import imageio.v3 as iio
import numpy as np

from roadseg import config
from roadseg.commands import infer
from roadseg.serving import video
from tests.helpers import run_main, write_png

STEMS = ('a', 'A', 'a_png', 'a.png', 'a_jpg', 'b', 'd1_a_png', 'a-2', 'a_png_bmp', 'a.b')
EXTENSIONS = ('.png', '.PNG', '.jpg', '.bmp', '.mp4', '.mkv', '', '.png.png')
FOLDERS = ('d1', 'd2', 'x/d1', 'x/y/d2', '.')
SET_COUNT = 400


def _suffixes(path):
    return video.OUTPUT_SUFFIXES if path.lower().endswith(video.VIDEO_EXTENSIONS) else infer.IMAGE_SUFFIXES


def _random_paths(rng):
    names = {os.path.normpath(os.path.join(rng.choice(FOLDERS), rng.choice(STEMS) + rng.choice(EXTENSIONS)))
             for _ in range(rng.randint(1, 12))}
    return sorted(names)


def test_output_names_are_one_to_one_and_order_free_over_adversarial_name_sets():
    rng = random.Random(21)
    for _ in range(SET_COUNT):
        paths = _random_paths(rng)
        plan = infer.planned_outputs(paths, 'out', _suffixes)
        outputs = [target for targets in plan.values() for target in targets]
        assert len({target.casefold() for target in outputs}) == len(outputs), plan  # distinct, even case-folded
        assert all(os.path.dirname(target) == 'out' for target in outputs)
        shuffled = list(paths)
        rng.shuffle(shuffled)
        assert infer.planned_outputs(shuffled, 'out', _suffixes) == plan, paths  # the order given changes nothing
    # The cases keep their plain names where they can.
    stems = infer.output_stems(['f/a.png', 'f/a.jpg', 'f/a_png.bmp'])
    assert len(set(stems.values())) == 3 and stems['f/a.jpg'] == 'a_jpg', stems
    stems = infer.output_stems(['v/drive.mp4', 'v/drive.avi', 'v/drive_mp4.mkv'])
    assert len(set(stems.values())) == 3, stems


def test_inputs_whose_names_collided_get_their_own_overlays(small_trained_run, tmp_path):
    folder = str(tmp_path / 'in')
    sizes = {'a.png': (40, 50), 'a.jpg': (44, 60), 'a_png.bmp': (48, 70)}
    os.makedirs(folder)
    for name, size in sizes.items():
        iio.imwrite(os.path.join(folder, name), np.full(size + (3,), 100, np.uint8))
    out = str(tmp_path / 'out')
    stdout, stop = run_main(['infer', '--model', small_trained_run, folder, '--out', out])
    assert stop is None and '3 of 3 images written' in stdout, (stdout, stop)
    plan = infer.planned_outputs(sorted(os.path.join(folder, name) for name in sizes), out, _suffixes)
    assert sorted(os.listdir(out)) == sorted(os.path.basename(targets[0]) for targets in plan.values())
    for path, targets in plan.items():  # each overlay is its own input's (they differ in size)
        assert iio.imread(targets[0]).shape[:2] == sizes[os.path.basename(path)]


def test_a_name_too_long_for_the_file_system_is_refused_before_any_work(small_trained_run, tmp_path):
    folder = str(tmp_path / 'in')
    name_max = os.pathconf(str(tmp_path), 'PC_NAME_MAX')
    long_name = 'k' * (name_max - len('.png')) + '.png'  # a name the file system takes; its overlay's it does not
    first = write_png(os.path.join(folder, 'first.png'), np.full((30, 40, 3), 80, np.uint8))
    long_input = write_png(os.path.join(folder, long_name), np.full((30, 40, 3), 80, np.uint8))
    out = str(tmp_path / 'out')
    stdout, stop = run_main(['infer', '--model', small_trained_run, first, long_input, '--out', out])
    message = str(stop)
    assert message.startswith('main.py infer: ' + long_input) and '\n' not in message, message
    assert 'longer than the file system' in message and 'rename' in message, message
    assert not os.path.exists(out), 'refused before any work: not even the folder'
    assert 'written' not in stdout, stdout


def test_out_inside_a_run_folder_or_on_a_file_is_refused_in_one_line(tmp_path):
    run = str(tmp_path / 'run')
    os.makedirs(os.path.join(run, 'export', 'variables'))
    with open(os.path.join(run, config.RUN_CONFIG_FILE), 'w') as f:
        f.write('{}')
    picture = write_png(str(tmp_path / 'street.png'), np.full((30, 40, 3), 80, np.uint8))
    a_file = str(tmp_path / 'notes.txt')
    with open(a_file, 'w') as f:
        f.write('the user keeps this')
    cases = [(run, 'is a run folder'), (os.path.join(run, 'export'), 'is inside the run folder'),
             (os.path.join(run, 'export', 'variables', 'new', 'deeper'), 'is inside the run folder'),
             (a_file, 'is a file; give a folder (new or existing)'),
             (os.path.join(a_file, 'sub'), 'cannot be a folder')]
    for out, expected in cases:
        # The model is never opened: these are refused first (any path stands for it).
        _, message = run_main(['infer', '--model', str(tmp_path / 'no-model'), picture, '--out', out])
        assert str(message).startswith('main.py infer: --out ') and expected in message, (out, message)
        assert '\n' not in message
    assert sorted(os.listdir(os.path.join(run, 'export', 'variables'))) == []
    with open(a_file) as f:
        assert f.read() == 'the user keeps this'
