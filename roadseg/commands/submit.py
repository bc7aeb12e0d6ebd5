"""python main.py submit: the files the KITTI road benchmark takes, from a trained model and data_road/testing.

For every test image, the road confidence as an 8-bit PNG (p x 255) named the devkit's way (um_road_000000.png,
umm_road_..., uu_road_...), in the bird's-eye view: devkit_road's readme asks for results "transformed into the
birds eye view space before submitting" (800 x 400 cells, config.BEV_*), and its example maps perspective test
results there with each image's calibration before zipping them. Cells outside the image hold 0, as the devkit's
own transform writes them. Then a zip of the PNGs at its root, ready to upload.

A testing folder that lacks calibrations or images is refused before any work; nothing is written into the data
folder or a run folder, nor over existing files unasked (--overwrite).
"""
import glob
import os
import zipfile

from tqdm import tqdm

from roadseg import atomic, config
from roadseg.commands import infer
from roadseg.data import datasets, images
from roadseg.errors import DatasetError, OutputError
from roadseg.evaluation import bev
from roadseg.serving import files

SUBMISSION_ZIP = 'kitti_road_submission.zip'


def submit(args):
    """Predict every test image, write its bird's-eye view road confidence under the devkit's name, then zip."""
    testing = os.path.join(args.data_dir, 'data_road', 'testing')
    paths = complete_testing_images(testing)
    plan = {path: [os.path.join(args.out, submission_name(path))] for path in paths}
    archive = os.path.join(args.out, SUBMISSION_ZIP)
    check_out_of_data(args.out, args.data_dir)
    infer.check_outputs(dict(plan, **{archive: [archive]}), paths, args.out, args.overwrite)
    shortfall = sum(config.KITTI_TEST_IMAGES.values()) - len(paths)
    if shortfall:
        print('submit: note: %d test images in %s, where KITTI\'s test set has %d (%s); the server scores complete '
              'submissions only' % (len(paths), testing, sum(config.KITTI_TEST_IMAGES.values()),
                                    ', '.join('%s %d' % item for item in config.KITTI_TEST_IMAGES.items())))
    predict = files.open_model(args.model)
    try:
        os.makedirs(args.out, exist_ok=True)
        for path, image, probabilities in tqdm(files.predictions(predict, paths), total=len(paths), desc='submit',
                                               unit='img'):
            mapping = bev.BevMapping.of_image(path, image.shape)
            atomic.write_image(plan[path][0], images.probability_image(
                mapping(probabilities[..., predict.road_class])))
    finally:
        predict.close()
    write_zip(archive, [targets[0] for targets in plan.values()])
    print("submit: %d road confidence maps of the KITTI test images in the bird's-eye view (%dx%d, 8-bit PNG, "
          "named like um_road_000000.png) in %s, and zipped for upload: %s"
          % (len(paths), config.BEV_SHAPE[0], config.BEV_SHAPE[1], args.out, archive))


def submission_name(image_path):
    """um_000012.png -> um_road_000012.png (the devkit's name of a road result)."""
    category, number = os.path.basename(image_path).split('_', 1)
    return '%s_road_%s' % (category, number)


def complete_testing_images(testing):
    """The test images of a KITTI `testing` folder, each with its calibration file; an incomplete folder (no
    image_2/ or calib/, images without calibration or calibrations without image, names the benchmark does not
    know) is refused in one line with its counts."""
    image_dir, calib_dir = os.path.join(testing, 'image_2'), os.path.join(testing, bev.CALIBRATION_FOLDER)
    if not os.path.isdir(image_dir):
        raise DatasetError('%s does not exist: submit needs KITTI\'s test images in data_road/testing/image_2 '
                           '(from data_road.zip); point --data-dir at the folder holding data_road/' % image_dir)
    paths = sorted(glob.glob(os.path.join(image_dir, '*.png')))
    if not paths:
        raise DatasetError('no test images (*.png) in %s' % image_dir)
    calibrations = {os.path.splitext(name)[0] for name in (os.listdir(calib_dir) if os.path.isdir(calib_dir) else ())
                    if name.endswith(bev.CALIBRATION_EXTENSION)}
    stems = {os.path.splitext(os.path.basename(path))[0] for path in paths}
    foreign = sorted(stem for stem in stems if datasets.kitti_category(stem) is None)
    uncalibrated = sorted(stems - calibrations)
    orphans = sorted(calibrations - stems)
    problems = [('%d of %d images have no calibration in %s (e.g. %s.txt)' % (len(uncalibrated), len(paths),
                                                                           calib_dir, uncalibrated[0]))
                if uncalibrated else '',
                '%d calibration files have no image (e.g. %s.png)' % (len(orphans), orphans[0]) if orphans else '',
                '%d images are not named <um|umm|uu>_<number>.png (e.g. %s.png)' % (len(foreign), foreign[0])
                if foreign else '']
    problems = [problem for problem in problems if problem]
    if problems:
        raise DatasetError('%s is incomplete: %s; the benchmark needs every test image with its calibration '
                           '(unzip data_road.zip whole)' % (testing, '; '.join(problems)))
    return paths


def check_out_of_data(out_dir, data_dir):
    """Refuse an --out inside the data folder: a submission never writes among the dataset's files."""
    out, data = os.path.realpath(out_dir), os.path.realpath(data_dir)
    if out == data or out.startswith(data + os.sep):
        raise OutputError('--out %s is inside the data folder %s: a submission is never written among the '
                          "dataset's files. Choose a folder outside it" % (out_dir, data_dir))


def write_zip(archive, paths):
    """A zip of `paths` at its root, written atomically (PNGs are compressed already: stored as they are)."""
    with atomic.writing(archive) as f, zipfile.ZipFile(f, 'w', zipfile.ZIP_STORED) as zipped:
        for path in sorted(paths):
            zipped.write(path, os.path.basename(path))
