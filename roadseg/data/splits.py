"""Which images train, choose the checkpoint and report, for every dataset; and which a model is evaluated on.

Validation is never trained on, and the labelled test images are scored once, by the chosen model: a KITTI
share per category, CamVid a whole drive, Cityscapes whole train cities (cityscapes.run_splits says why).
"""
import collections
import hashlib
import os

import numpy as np

from roadseg import config
from roadseg.data import cityscapes, datasets, downloads, roadgen
from roadseg.errors import DatasetError

# A run's data: the dataset's name, its root, the train, validation and labelled test (image, label) pairs, and
# the images its overlays are made of.
RunData = collections.namedtuple('RunData', 'dataset root train val test overlays')


def detect_dataset(data_dir, dataset='auto'):
    """The layout of `data_dir`: `dataset` itself unless it is 'auto'."""
    if dataset != 'auto':
        return dataset
    if cityscapes.is_cityscapes(data_dir):
        return 'cityscapes'
    return 'camvid' if datasets.is_camvid(data_dir) else 'kitti'


def found_dataset(data_dir, dataset='auto'):
    """(dataset, a clause saying how it was found) for `data_dir`: what a refused flag's message starts from."""
    found = detect_dataset(data_dir, dataset)
    if dataset != 'auto':
        return found, '%s is read as %s (--dataset %s)' % (data_dir, config.DATASET_NAMES[found], dataset)
    if found == 'cityscapes':
        return found, '%s is a Cityscapes folder (it has %s/ or %s/)' % (data_dir, cityscapes.IMAGES,
                                                                        cityscapes.LABELS)
    if found == 'camvid':
        return found, '%s is a CamVid folder (it has %s)' % (data_dir, ', '.join(
            split + suffix + '/' for split in datasets.CAMVID_SPLITS for suffix in ('', 'annot')))
    return found, '%s has no CamVid or Cityscapes folders, so it is read as KITTI Road' % data_dir


def check_dataset_flags(command, dataset, given, found):
    """DatasetError when the flags `given` (argparse dests) hold one of `command`'s dataset-specific flags that
    `dataset` does not take (config.DATASET_FLAGS); `found` says how the dataset was found, for the message."""
    table = config.DATASET_FLAGS[command]
    dataset = 'kitti' if dataset == 'kitti-mask' else dataset
    own = table.get(dataset, ())
    foreign = sorted(name for name in set(given) if name not in own and any(name in flags for flags in table.values()))
    if not foreign:
        return
    flag = lambda name: '--' + name.replace('_', '-')  # noqa: E731
    takes = ('only %s of the dataset-specific flags' % ', '.join(map(flag, own)) if own
             else 'none of the dataset-specific flags')
    owners = {}
    for name in foreign:
        owners.setdefault(' and '.join(config.DATASET_NAMES[other] for other, flags in table.items()
                                       if name in flags), []).append(flag(name))
    owners = '; '.join('%s %s for %s' % (' and '.join(flags), 'is' if len(flags) == 1 else 'are', owner)
                       for owner, flags in owners.items())
    raise DatasetError('%s %s not apply here: %s, which takes %s (%s); drop %s'
                       % (', '.join(map(flag, foreign)), 'does' if len(foreign) == 1 else 'do', found, takes, owners,
                          'it' if len(foreign) == 1 else 'them'))


def check_disjoint(data):
    """DatasetError when one image would play two of the roles training, validation and test: the same file, or two
    files of the same name (CamVid's frame names, Cityscapes' city_seq_frame). Byte-for-byte copies under other
    names are said (a warning here; with the test results, overlap_with_test). Returns `data`."""
    roles = [(role, [image for image, _ in pairs]) for role, pairs in
             (('training', data.train), ('validation', data.val), ('test', data.test))]
    for what, key in (('the same file', os.path.realpath), ('two files of the same name', os.path.basename)):
        first = {}
        for role, paths in roles:
            for path in paths:
                seen = first.setdefault(key(path), (role, path))
                if seen[0] != role:
                    raise DatasetError('%s (%s) and %s (%s) are %s: a run would %s. Keep each image in one split '
                                       '(move or remove one of them)' % (seen[1], seen[0], path, role, what,
                                                                         ROLE_CLASHES[frozenset((seen[0], role))]))
    for (one, one_paths), (other, other_paths) in ((roles[0], roles[1]), (roles[0], roles[2]), (roles[1], roles[2])):
        copies = same_content(one_paths, other_paths)
        if copies:
            print('warning: %d %s image(s) are byte-for-byte copies of %s images (the first: %s): a run would %s'
                  % (len(copies), other, one, copies[0], ROLE_CLASHES[frozenset((one, other))]))
    return data


# What a run would do wrong with one image in two roles.
ROLE_CLASHES = {frozenset(('training', 'validation')): 'choose its checkpoint on images it trains on',
                frozenset(('training', 'test')): 'report on images it trains on',
                frozenset(('validation', 'test')): 'report on the images it chooses its checkpoint on'}


def same_content(originals, others):
    """The paths of `others` whose bytes are those of a file of `originals`. Only files of a size both sides have
    are read, so that a large dataset costs little more than a listing; files that are gone are passed over."""
    def size(path):
        try:
            return os.path.getsize(path)
        except OSError:
            return None

    def digest(path):
        with open(path, 'rb') as f:
            return hashlib.sha256(f.read()).digest()

    sizes = collections.defaultdict(list)
    for path in originals:
        sizes[size(path)].append(path)
    candidates = [path for path in others if size(path) is not None and size(path) in sizes]
    known = {digest(path) for length in {size(path) for path in candidates} for path in sizes[length]}
    return [path for path in candidates if digest(path) in known]


def overlap_with_test(dataset, train, val, test):
    """What the labelled test images share with those that train or choose the checkpoint ({} if nothing), said with
    the test results and recorded in test_metrics.json:
      drives: {drive: {'images': n, 'with': 'training' or 'validation'}}, CamVid's test images of drives that train
              or validate. SegNet's test split holds frames of drive 0001TP, which trains unless it is --val-drive:
              the frames differ and the drives are all CamVid has, so this is said, not refused;
      copies: {'training' or 'validation': n}, test images that are byte-for-byte copies of such images.
    """
    overlap = {}
    if dataset == 'camvid':
        roles = {datasets.camvid_drive(image): 'validation' for image, _ in val}
        roles.update({datasets.camvid_drive(image): 'training' for image, _ in train})
        for image, _ in test:
            drive = datasets.camvid_drive(image)
            if drive in roles:
                overlap.setdefault('drives', {}).setdefault(drive, {'images': 0, 'with': roles[drive]})['images'] += 1
    test_images = [image for image, _ in test]
    for role, pairs in (('training', train), ('validation', val)):
        copies = same_content([image for image, _ in pairs], test_images) if test_images else []
        if copies:
            overlap.setdefault('copies', {})[role] = len(copies)
    return overlap


def overlap_note(overlap):
    """'test includes 2 images of drive 0001TP, which training saw' for overlap_with_test's answer; '' for {}."""
    parts = []
    for role, clause in (('training', 'which training saw'), ('validation', 'on which the checkpoint was chosen')):
        counts = ['%d image%s of drive %s' % (shared['images'], 's' if shared['images'] > 1 else '', drive)
                  for drive, shared in sorted(overlap.get('drives', {}).items()) if shared['with'] == role]
        if counts:
            parts.append('%s, %s' % (' and '.join(counts), clause))
        if overlap.get('copies', {}).get(role):
            parts.append('%d byte-for-byte cop%s of %s images' % (overlap['copies'][role],
                                                                  'ies' if overlap['copies'][role] > 1 else 'y', role))
    return 'test includes %s' % '; '.join(parts) if parts else ''


def camvid_drives(root):
    """The drives of a CamVid folder's train/ and val/ images, sorted: those a run may hold out."""
    return sorted({datasets.camvid_drive(image) for image, _ in camvid_pool(root)})


def camvid_pool(root):
    return datasets.camvid_pairs(root, 'train') + datasets.camvid_pairs(root, 'val')


def camvid_splits(root, val_drive, with_test=True):
    """(train, validation, test) of a CamVid folder: validation is one whole drive that is never trained on, or
    none (val_drive config.NO_VAL_DRIVE: every drive trains, the last epoch is the model)."""
    pool = camvid_pool(root)
    val = [pair for pair in pool if datasets.camvid_drive(pair[0]) == val_drive]
    if not val and val_drive != config.NO_VAL_DRIVE:
        raise DatasetError('no images of drive %s in %s/train or val: choose --val-drive among %s, or %s'
                           % (val_drive, root, ', '.join(camvid_drives(root)), config.NO_VAL_DRIVE))
    train = [pair for pair in pool if datasets.camvid_drive(pair[0]) != val_drive]
    test = datasets.camvid_pairs(root, 'test') if with_test and datasets.has_camvid_test(root) else []
    return train, val, test


def kitti_splits(data_dir, val_fraction, kitti_url=None):
    """(data_road, train, validation): a share of each KITTI category validates; the test images are unlabelled."""
    data_road = downloads.maybe_download_kitti(data_dir, kitti_url)
    train, val = split_pairs(datasets.kitti_road_pairs(os.path.join(data_road, 'training')), val_fraction)
    if not train:
        raise DatasetError('--val-fraction %g leaves no training images (of %d); lower it'
                           % (val_fraction, len(train) + len(val)))
    return data_road, train, val


def training_data(args):
    """The RunData of `train`'s --data-dir, split as its flags say."""
    dataset = detect_dataset(args.data_dir, args.dataset)
    if dataset == 'cityscapes':
        found = cityscapes.run_splits(args.data_dir, args.val_cities)
        data = check_disjoint(RunData(dataset, args.data_dir, found.train, found.val, found.test, found.overlays))
        print(cityscapes.describe(found, args.val_cities, args.image_shape))
        return data
    if dataset == 'camvid':
        return camvid_data(args.data_dir, args.val_drive)
    data_road, train, val = kitti_splits(args.data_dir, args.val_fraction, args.kitti_url)
    return check_disjoint(RunData('kitti-mask' if args.labels == 'mask' else 'kitti', data_road, train, val, [],
                                  datasets.kitti_test_images(data_road)))


def camvid_data(root, val_drive, with_test=True):
    """The RunData of a CamVid folder: the test split overlaid where there is one, else the validation drive
    (else the training images).

    Test images from drives that train (or validate) are said here, and again with the test results."""
    train, val, test = camvid_splits(root, val_drive, with_test)
    data = check_disjoint(RunData('camvid', root, train, val, test, [image for image, _ in (test or val or train)]))
    drives = overlap_with_test('camvid', train, val, test).get('drives')
    if drives:
        print('CamVid: %s: its test measures are of new frames of known drives, not of new drives'
              % overlap_note({'drives': drives}))
    return data


# The generated-roads demo: 520 labelled scenes, of which one in 13 validate and one in 13 test (about 40
# each); 12 unlabelled scenes at KITTI's test sizes for the overlays.
DEMO_LABELLED_IMAGES = 520
DEMO_HELD_OUT_SHARE = 1 / 13
DEMO_OVERLAY_IMAGES = 12


def generated_roads_data(demo_dir, seed):
    """The RunData of the generated-roads demo, generating the scenes in `demo_dir` if absent."""
    data_road = roadgen.ensure_dataset(demo_dir, n_train=DEMO_LABELLED_IMAGES, n_test=DEMO_OVERLAY_IMAGES, seed=seed)
    pairs = datasets.kitti_road_pairs(os.path.join(data_road, 'training'))
    rest, test = split_pairs(pairs, DEMO_HELD_OUT_SHARE)
    train, val = split_pairs(rest, len(test) / len(rest))
    return check_disjoint(RunData('kitti', data_road, train, val, test, datasets.kitti_test_images(data_road)))


def evaluation_pairs(data_dir, split=None):
    """(labelled pairs, a sentence saying which they are) for evaluate's --data-dir and --split."""
    if cityscapes.is_cityscapes(data_dir):
        return cityscapes.evaluation_pairs(data_dir, split)
    if datasets.is_camvid(data_dir):
        chosen = split or ('test' if datasets.has_camvid_test(data_dir) else 'val')
        if chosen == 'test' and not datasets.has_camvid_test(data_dir):
            raise DatasetError('%s has no test/ and testannot/ folders; use --split val' % data_dir)
        note = '' if chosen == 'test' or split else ' (there is no test/ split here)'
        return datasets.camvid_pairs(data_dir, chosen), 'CamVid %s split%s' % (chosen, note)
    data_road = downloads.maybe_download_kitti(data_dir)
    return (datasets.kitti_road_pairs(os.path.join(data_road, 'training')),
            'all labelled KITTI training images (KITTI\'s test labels are not public)')


def split_pairs(pairs, fraction):
    """Deterministic split into (kept, held out), stratified by KITTI category.

    From each category (um, umm, uu), round(fraction * n) images spread evenly over its sorted list are
    held out, so neighbouring video frames do not all land on one side.
    """
    by_category = {}
    for pair in sorted(pairs):
        by_category.setdefault(datasets.kitti_category(pair[0]), []).append(pair)
    kept, held_out = [], []
    for members in by_category.values():
        count = int(round(fraction * len(members)))
        chosen = set(np.linspace(0, len(members) - 1, count).round().astype(int)) if count else set()
        for i, pair in enumerate(members):
            (held_out if i in chosen else kept).append(pair)
    return kept, held_out
