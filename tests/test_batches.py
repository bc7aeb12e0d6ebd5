"""Training batches: augmented labels stay on their pixels, the jitter keeps its ranges, a seed gives the same
batches (whatever the threads), and the pool of threads is started once.

Small images, built in memory: the road is a stripe painted one colour, don't-care another, the rest a third.
"""
import threading

import numpy as np
import pytest

from roadseg import config
from roadseg.data import batches

SHAPE = (24, 40)
NOT_ROAD, ROAD, DONT_CARE = 0, 1, 2  # class ids; DONT_CARE == the number of classes: no class set
NUM_CLASSES = 2
# Greys, so that each class is one level apart, in every channel, from those it touches: not road only touches
# road, road both, don't care only road (a blend of two classes then sits between their levels).
LEVELS = {NOT_ROAD: 30, ROAD: 130, DONT_CARE: 230}
KITTI = batches.Augmentation(config.KITTI_RECIPE['zoom'], config.KITTI_RECIPE['color_jitter'])


def stripes(side, start):
    """Class ids along one side: not road, road, don't care, road, not road, from `start` on."""
    road, dont_care = side // 5, side // 6
    classes = np.full(side, NOT_ROAD, np.uint8)
    classes[start:start + 2 * road + dont_care] = ROAD
    classes[start + road:start + road + dont_care] = DONT_CARE
    return classes


def striped_pairs(count):
    """`count` (image, class ids) pairs: even ones striped by column, odd ones by row (a label then depends on one
    coordinate, so a bilinear blend mixes two touching classes at most), the stripes moving from pair to pair."""
    images, labels = np.empty((count,) + SHAPE + (3,), np.uint8), np.empty((count,) + SHAPE, np.uint8)
    for i in range(count):
        classes = stripes(SHAPE[i % 2 == 0], 2 + i % 5)
        labels[i] = classes[None, :] if i % 2 == 0 else classes[:, None]
        images[i] = np.array([LEVELS[c] for c in range(3)], np.uint8)[labels[i], None]
    return images, labels


class InMemoryBatches(batches.TrainingBatches):
    """TrainingBatches over arrays already decoded (the same pipeline; no files to write and decode)."""

    def __init__(self, images, labels, **settings):
        self.images, self.labels, self.num_classes = images, labels, NUM_CLASSES
        self.seed, self.epochs_served = settings.pop('seed', 0), settings.pop('first_epoch', 0)
        self.augment, self.augmentation = settings.pop('augment', True), settings.pop('augmentation', KITTI)
        self.threads, self._pool = settings.pop('threads', None) or batches.default_threads(), None
        assert not settings, settings


def served(get_batches_fn, epochs, batch_size=4):
    """`epochs` calls of get_batches_fn, as lists of (images, labels) batches."""
    return [list(get_batches_fn(batch_size)) for _ in range(epochs)]


def same_epochs(first, second):
    return all(len(a) == len(b) and all(np.array_equal(x, y) for pair, other in zip(a, b) for x, y in zip(pair, other))
               for a, b in zip(first, second))


def class_ids_of(onehot):
    return batches.class_ids(onehot)


# --------------------------------------------------------------------------- labels stay on their pixels

def assert_labels_on_their_pixels(image, ids):
    """Every not-road pixel is at most as bright as every other pixel, and every don't-care pixel at least as
    bright: a nearest-neighbour label and a bilinear image that sample the same place always are (the label's
    class weighs at least half there, and only touching classes blend), and the colour jitter is monotone."""
    levels = image.astype(int)
    for cls, sign in ((NOT_ROAD, -1), (DONT_CARE, 1)):
        inside, outside = sign * levels[ids == cls], sign * levels[ids != cls]
        if inside.size and outside.size:
            assert inside.min() >= outside.max() - 1, (cls, sign * inside.min(), sign * outside.max())


def test_augmented_batches_keep_every_label_on_its_pixels_and_dont_care_stays_dont_care():
    images, labels = striped_pairs(10)
    get_batches_fn = InMemoryBatches(images, labels, augmentation=batches.Augmentation((0.7, 1.4), 0.4))
    seen, dont_care = 0, 0
    for epoch in served(get_batches_fn, 12, batch_size=5):
        for batch_images, onehot in epoch:
            assert onehot.dtype == bool and onehot.shape == batch_images.shape[:3] + (NUM_CLASSES,)
            assert onehot.sum(axis=-1).max() == 1, "one class a pixel, or none (don't care)"
            for image, ids in zip(batch_images, class_ids_of(onehot)):
                assert_labels_on_their_pixels(image, ids)
                seen, dont_care = seen + 1, dont_care + (ids == DONT_CARE).mean()
    assert seen == 120 and 0.08 < dont_care / seen < 0.2, "don't-care pixels stay don't care"


def test_the_recipes_jitter_keeps_each_class_near_its_colour():
    images, labels = striped_pairs(8)
    for batch_images, onehot in served(InMemoryBatches(images, labels), 6)[-1] + served(
            InMemoryBatches(images, labels, seed=3), 1)[0]:
        for image, ids in zip(batch_images, class_ids_of(onehot)):
            assert_labels_on_their_pixels(image, ids)
            for cls, level in LEVELS.items():
                typical = np.median(image[ids == cls])
                # contrast +-20%, gamma e^+-0.2, brightness +-20 levels: well inside 70 levels
                assert abs(typical - level) < 70, (cls, typical, level)


# --------------------------------------------------------------------------- the ranges

def test_draws_stay_within_the_ranges_and_spread_over_them():
    augmentation = batches.Augmentation((0.9, 1.3), 0.25)
    jitters = batches.draw_jitters(np.random.default_rng(0), 4000, augmentation)
    columns = {name: np.array([getattr(j, name) for j in jitters], float) for name in batches.Jitter._fields
               if name != 'paste'}
    assert all(j.paste is None for j in jitters), 'no CutMix unless asked'
    assert 0.46 < columns['flip'].mean() < 0.54, 'a flip half of the time'
    for name, (low, high) in (('zoom', (0.9, 1.3)), ('top', (0, 1)), ('left', (0, 1)),
                              ('saturation', (0.75, 1.25)), ('contrast', (0.75, 1.25)),
                              ('gamma', (np.exp(-0.25), np.exp(0.25))), ('brightness', (-25, 25))):
        values = columns[name]
        assert low <= values.min() and values.max() <= high, name
        assert values.min() < low + 0.02 * (high - low) and values.max() > high - 0.02 * (high - low), name


def test_zoom_stays_in_its_range_and_flips_happen_half_the_time():
    classes = np.zeros(SHAPE[1], np.uint8)
    classes[15:25], classes[25:28] = ROAD, DONT_CARE  # inside every window of a zoom up to 1.5
    labels = np.repeat(np.broadcast_to(classes, SHAPE)[None], 200, axis=0)
    images = np.zeros(labels.shape + (3,), np.uint8)
    _, moved = batches.augment_batch(np.random.default_rng(1), images, labels, batches.Augmentation((1.0, 1.5), 0.0))
    widths = (moved[:, 0] == ROAD).sum(axis=1)
    assert 10 <= widths.min() and widths.max() <= 16, (widths.min(), widths.max())  # 10 columns x 1.0-1.5
    assert widths.min() <= 11 and widths.max() >= 14, 'the whole range is used'
    flipped = np.mean([np.flatnonzero(row == ROAD).mean() > np.flatnonzero(row == DONT_CARE).mean()
                       for row in moved[:, 0]])
    assert 0.38 < flipped < 0.62, flipped


def test_a_zoom_below_one_frames_the_image_as_numpys_symmetric_padding_does():
    for side, zoomed, offset in ((10, 7, 2), (10, 4, 0), (10, 4, 6), (9, 3, 5), (8, 8, 0)):
        expected = np.pad(np.arange(zoomed), (offset, side - zoomed - offset), mode='symmetric')
        assert batches.window_positions(side, zoomed, offset).tolist() == expected.tolist(), (side, zoomed, offset)


def test_colour_jitter_is_the_reference_formula_within_a_level():
    """jitter_colours against the recipe written out in float numpy: saturation, gamma, then contrast about the
    mean and brightness."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, SHAPE + (3,)).astype(np.uint8)
    for jitter in batches.draw_jitters(rng, 20, batches.Augmentation((1, 1), 0.4)):
        pixels = batches.apply_gamma(batches.saturate(image.astype(np.float64), jitter.saturation), jitter.gamma)
        mean = pixels.mean()
        expected = np.clip((pixels - mean) * jitter.contrast + mean + jitter.brightness, 0, 255)
        jittered = batches.jitter_colours(image, jitter)
        assert np.abs(jittered - expected).max() <= 1.5, jitter


# --------------------------------------------------------------------------- the same batches for a seed

CUTMIX = batches.Augmentation((0.8, 1.25), 0.3, cutmix=0.5)


def test_cutmix_lays_one_box_of_another_image_over_an_image_and_its_label_alike():
    # Each image one flat level, each label one class: the pasted box shows as the partner's level, and the label
    # there must be the partner's class. Zoom 1 and no colour jitter keep the levels exact.
    count = 12
    levels = 10 + 20 * np.arange(count)
    images = np.broadcast_to(levels[:, None, None, None], (count,) + SHAPE + (3,)).astype(np.uint8)
    labels = np.broadcast_to((np.arange(count) % 2)[:, None, None], (count,) + SHAPE).astype(np.uint8)
    pasted_areas = []
    for seed in range(20):
        moved, moved_labels = batches.augment_batch(np.random.default_rng(seed), images, labels,
                                                    batches.Augmentation((1, 1), 0.0, cutmix=0.5))
        for index, (image, label) in enumerate(zip(moved, moved_labels)):
            other = image[..., 0] != levels[index]
            assert (label[~other] == index % 2).all(), 'outside the box: the image and its own label'
            if other.any():
                rows, columns = np.nonzero(other)
                assert other[rows.min():rows.max() + 1, columns.min():columns.max() + 1].all(), 'one box'
                partner = int(np.nonzero(levels == image[rows[0], columns[0], 0])[0][0])
                assert (image[other] == levels[partner]).all() and (label[other] == partner % 2).all()
            pasted_areas.append(other.mean())
    pasted = np.array(pasted_areas)
    # Half the images pasted (a few onto themselves: invisible), each box a share 1 - U(0, 1) of the area.
    assert 0.4 < (pasted > 0).mean() < 0.55 and 0.4 < pasted[pasted > 0].mean() < 0.6, pasted.mean()
    assert pasted.max() > 0.9 and pasted[pasted > 0].min() < 0.1, 'from small boxes to nearly the whole image'


def test_cutmix_draws_come_after_the_others_so_a_recipe_without_it_sees_the_same_moves():
    plain, mixed = (batches.draw_jitters(np.random.default_rng(3), 50, augmentation) for augmentation in
                    (batches.Augmentation((0.8, 1.25), 0.3), CUTMIX))
    assert [jitter._replace(paste=None) for jitter in mixed] == plain, "a recipe's draws do not move with CutMix"
    assert 15 < sum(jitter.paste is not None for jitter in mixed) < 35


def test_a_seed_gives_the_same_batches_whatever_the_threads_and_another_seed_others():
    images, labels = striped_pairs(9)
    first = served(InMemoryBatches(images, labels, seed=7, threads=1), 3)
    assert same_epochs(first, served(InMemoryBatches(images, labels, seed=7, threads=3), 3))
    mixed = served(InMemoryBatches(images, labels, seed=7, threads=1, augmentation=CUTMIX), 2)
    assert same_epochs(mixed, served(InMemoryBatches(images, labels, seed=7, threads=3, augmentation=CUTMIX), 2))
    assert not any(same_epochs([a], [b]) for a, b in zip(first, served(InMemoryBatches(images, labels, seed=8), 3)))
    one_image = striped_pairs(1)  # one order only: the jitter alone tells the seeds apart
    assert not same_epochs(served(InMemoryBatches(*one_image, seed=7), 1), served(InMemoryBatches(*one_image), 1))
    assert not same_epochs(first[:1], first[1:2]), 'other order and jitter every epoch'


def test_a_resumed_or_rewound_run_sees_the_batches_of_an_uninterrupted_one():
    images, labels = striped_pairs(9)
    uninterrupted = served(InMemoryBatches(images, labels, seed=2), 4)
    assert same_epochs(uninterrupted[2:], served(InMemoryBatches(images, labels, seed=2, first_epoch=2), 2))
    rewound = InMemoryBatches(images, labels, seed=2)
    served(rewound, 3)
    rewound.rewind_to(1)
    assert same_epochs(uninterrupted[1:], served(rewound, 3))


# --------------------------------------------------------------------------- the threads

def _pool_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith('training-batches')]


def test_the_threads_start_once_and_an_epoch_left_early_does_not_block_the_next():
    images, labels = striped_pairs(16)
    get_batches_fn = InMemoryBatches(images, labels, threads=2)
    before = len(_pool_threads())
    pool = get_batches_fn.pool
    for _ in range(6):
        next(get_batches_fn(2))  # abandoned after one batch, as bench's full_batches and some tests do
        served(get_batches_fn, 1)
    assert get_batches_fn.pool is pool and len(_pool_threads()) - before <= 2


def test_an_error_while_making_a_batch_reaches_the_consumer():
    images, labels = striped_pairs(4)
    broken = InMemoryBatches(images, labels + NUM_CLASSES + 1)  # class ids no table row has
    with pytest.raises(IndexError):
        served(broken, 1)
