"""Data: decoding images, labels of every format, dataset layouts, splits and training batches."""
import os

import imageio.v3 as iio
import numpy as np
import pytest

import helper
from roadseg import errors
from roadseg.data import batches, datasets, images, splits
from roadseg.process import graph_mode_tf
from tests.helpers import SHARED_DATA, SMALL_SHAPE, kitti_label, write_camvid, write_png

tf = graph_mode_tf()


# --------------------------------------------------------------------------- decoding

def test_read_rgb_decodes_grey_grey_alpha_rgba_and_16_bit_without_damage(tmp_path):
    folder = str(tmp_path)
    grey = write_png(os.path.join(folder, 'grey.png'), (np.arange(12).reshape(3, 4) * 20).astype(np.uint8))
    assert images.read_rgb(grey).shape == (3, 4, 3) and images.read_rgb(grey)[1, 2, 0] == 120
    rgba = write_png(os.path.join(folder, 'rgba.png'), np.full((3, 4, 4), 7, np.uint8))
    assert images.read_rgb(rgba).shape == (3, 4, 3) and (images.read_rgb(rgba) == 7).all()
    grey_alpha = np.zeros((3, 4, 2), np.uint8)
    grey_alpha[..., 0], grey_alpha[..., 1] = 90, 255
    assert (images.read_rgb(write_png(os.path.join(folder, 'ga.png'), grey_alpha)) == 90).all()
    ramp = (np.arange(12).reshape(3, 4) * 5000).astype(np.uint16)  # 0 .. 55000 of 65535
    decoded = images.read_rgb(write_png(os.path.join(folder, 'grey16.png'), ramp))
    assert decoded.dtype == np.uint8 and decoded.shape == (3, 4, 3)
    assert np.abs(decoded[..., 0].astype(int) - np.rint(ramp / 257)).max() <= 1 and len(np.unique(decoded)) == 12


def test_read_rgb_names_an_unreadable_file_without_suggesting_a_plugin(tmp_path):
    folder = str(tmp_path)
    for name, content in (('corrupt.png', b'\x89PNG\r\n\x1a\n not really a png'), ('empty.png', b''),
                          ('fake.jpg', b'hello, I am text')):
        path = os.path.join(folder, name)
        with open(path, 'wb') as f:
            f.write(content)
        with pytest.raises(errors.DatasetError) as caught:
            images.read_rgb(path)
        message = str(caught.value)
        assert path in message and 'not a readable' in message, message
        assert 'pip install' not in message and '\n' not in message


def test_resize_matches_tensorflow_within_a_level_and_nearest_keeps_values():
    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3)).astype(np.uint8)
    for shape in [(16, 24), (80, 100), (37, 20)]:
        expected = tf.compat.v2.image.resize(image[None].astype(np.float32), shape, 'bilinear')
        with tf.Session() as sess:
            expected = sess.run(expected)[0]
        assert np.abs(images.resize_image(image, shape) - expected).max() <= 1, shape
    label = kitti_label(37, 53, slice(20, 30))
    resized = images.resize_nearest(label, (74, 24))
    colours = {tuple(c) for c in resized.reshape(-1, 3)}
    assert colours <= {datasets.ROAD_COLOR, datasets.NOT_ROAD_COLOR, (0, 0, 0)} and len(colours) == 3


def test_road_overlay_paints_only_road():
    image = np.full((2, 3, 3), 100, np.uint8)
    probability = np.array([[0.9, 0.5, 0.1], [0.51, 0.0, 1.0]])
    overlay = images.road_overlay(image, probability)
    green = np.rint(0.5 * 100 + 0.5 * np.array(images.OVERLAY_COLOR)).astype(np.uint8)
    road = probability > 0.5
    assert (overlay[road] == green).all() and (overlay[~road] == 100).all()


# --------------------------------------------------------------------------- labels

def test_kitti_labels_decode_road_not_road_and_dont_care():
    label = kitti_label(4, 3, slice(0, 2))
    label[2, 0] = (0, 0, 255)  # red channel 0: don't care, as in the devkit
    onehot = datasets.kitti_label_to_onehot(label)
    assert onehot.shape == (4, 3, 2) and onehot.dtype == bool
    assert onehot[:2, :, 1].all() and not onehot[:2, :, 0].any()
    assert not onehot[3].any() and not onehot[2, 0].any(), "don't-care rows are all zero"
    assert onehot[2, 1].tolist() == [True, False]


def test_labels_in_other_colours_are_refused_with_counts_and_masks_accepted_when_asked():
    mask = np.zeros((6, 8, 3), np.uint8)
    mask[3:] = 255  # a 0/255 road mask: white is road, nothing is don't care
    with pytest.raises(errors.DatasetError) as caught:
        datasets.kitti_label_to_onehot(mask, 'um_road_000000.png')
    message = str(caught.value)
    for text in ('um_road_000000.png', '24 pixels', '(255, 255, 255) x24', '--labels mask'):
        assert text in message, (text, message)
    assert '\n' not in message
    onehot = datasets.kitti_mask_to_onehot(mask, 'm.png')
    assert onehot[3:, :, 1].all() and onehot[:3, :, 0].all() and onehot.any(axis=-1).all()
    grey = mask.copy()
    grey[0, 0] = 128
    with pytest.raises(errors.DatasetError) as caught:
        datasets.kitti_mask_to_onehot(grey, 'g.png')
    assert 'g.png' in str(caught.value) and '128' in str(caught.value), str(caught.value)


def test_check_labels_warns_when_no_label_has_road(tmp_path):
    folder = str(tmp_path)
    label = np.zeros((4, 5, 3), np.uint8)
    label[:] = datasets.NOT_ROAD_COLOR
    pairs = [('x.png', write_png(os.path.join(folder, 'um_road_%06d.png' % i), label)) for i in range(2)]
    warning = datasets.check_labels(pairs, datasets.label_format('kitti', 'road'), 'validation')
    assert 'none of the 2 validation labels has a road pixel' in warning
    label[0] = datasets.ROAD_COLOR
    write_png(pairs[0][1], label)
    assert datasets.check_labels(pairs, datasets.label_format('kitti', 'road'), 'validation') == ''


# --------------------------------------------------------------------------- layouts and batches

def _kitti_folder(folder, names_with_labels, names_without_labels=(), orphan_labels=(), size=(20, 30)):
    """A KITTI training folder in `folder`: images with road and lane labels, images without, labels without."""
    for name in list(names_with_labels) + list(names_without_labels):
        write_png(os.path.join(folder, 'image_2', name + '.png'), np.full(size + (3,), 100, np.uint8))
    for name in list(names_with_labels) + list(orphan_labels):
        category, index = name.split('_')
        write_png(os.path.join(folder, 'gt_image_2', '%s_road_%s.png' % (category, index)),
                  kitti_label(size[0], size[1], slice(10, 20)))
        write_png(os.path.join(folder, 'gt_image_2', '%s_lane_%s.png' % (category, index)),
                  kitti_label(size[0], size[1], slice(0, 5)))
    return folder


def test_gen_batch_function_yields_resized_one_hot_batches(tmp_path):
    folder = _kitti_folder(str(tmp_path), ['um_000000', 'um_000001', 'umm_000000', 'uu_000000', 'uu_000001'])
    get_batches_fn = helper.gen_batch_function(folder, (32, 64))
    epoch = list(get_batches_fn(2))
    assert [len(batch_images) for batch_images, _ in epoch] == [2, 2, 1]
    batch_images, labels = epoch[0]
    assert batch_images.shape == (2, 32, 64, 3) and batch_images.dtype == np.uint8 and (batch_images == 100).all()
    assert labels.shape == (2, 32, 64, 2) and labels.dtype == bool
    assert labels[0, 16:30, :, 1].all() and labels[0, 2:14, :, 0].all()
    assert not labels[0, -1].any(), 'the bottom row is don\'t-care'
    first_epoch = [labels.sum() for _, labels in epoch]
    assert sum(first_epoch) == sum(labels.sum() for _, labels in get_batches_fn(3)), 'every image once per epoch'


def test_gen_batch_function_on_a_generated_dataset(small_dataset):
    get_batches_fn = helper.gen_batch_function(os.path.join(small_dataset, 'training'), SMALL_SHAPE)
    seen = 0
    for batch_images, labels in get_batches_fn(5):
        seen += len(batch_images)
        road = labels[..., 1].mean()
        assert 0.05 < road < 0.6, road
        assert labels.any(axis=-1).mean() > 0.9
    assert seen == get_batches_fn.num_images == 12


def test_gen_batch_function_explains_bad_datasets(new_folder):
    def refusal(folder):
        """gen_batch_function's DatasetError message for `folder`."""
        with pytest.raises(errors.DatasetError) as caught:
            helper.gen_batch_function(folder, (32, 64))
        return str(caught.value)

    def assert_names(message, *texts):
        for text in texts:
            assert text in message, (text, message)

    missing_label = _kitti_folder(new_folder('training'), ['um_000000'], names_without_labels=['um_000001'])
    assert_names(refusal(missing_label), 'um_000001.png', 'um_road_000001.png', 'no label')
    orphan = _kitti_folder(new_folder('training'), ['um_000000'], orphan_labels=['uu_000004'])
    assert_names(refusal(orphan), 'uu_road_000004.png', 'no image')
    empty = new_folder('empty')
    os.makedirs(os.path.join(empty, 'image_2'))
    os.makedirs(os.path.join(empty, 'gt_image_2'))
    assert_names(refusal(empty), 'no images')
    assert_names(refusal(os.path.join(empty, 'nowhere')), 'image_2', 'does not exist', datasets.KITTI_PAGE)
    corrupt = _kitti_folder(new_folder('training'), ['um_000000', 'um_000001'])
    bad_png = os.path.join(corrupt, 'image_2', 'um_000001.png')
    with open(bad_png, 'wb') as f:
        f.write(b'garbage')
    assert_names(refusal(corrupt), bad_png)
    mismatched = _kitti_folder(new_folder('training'), ['um_000000'])
    write_png(os.path.join(mismatched, 'image_2', 'um_000000.png'), np.zeros((21, 30, 3), np.uint8))
    assert_names(refusal(mismatched), 'um_road_000000.png', '30x20', '30x21')


def test_split_pairs_is_deterministic_stratified_and_disjoint():
    pairs = [('%s_%06d.png' % (c, i), 'label') for c, n in (('um', 12), ('umm', 18), ('uu', 6)) for i in range(n)]
    kept, held_out = splits.split_pairs(pairs, 1 / 6)
    assert (kept, held_out) == splits.split_pairs(list(reversed(pairs)), 1 / 6)
    assert sorted(kept + held_out) == sorted(pairs) and not set(kept) & set(held_out)
    counts = {c: sum(datasets.kitti_category(p) == c for p, _ in held_out) for c in ('um', 'umm', 'uu')}
    assert counts == {'um': 2, 'umm': 3, 'uu': 1}, counts
    assert splits.split_pairs(pairs, 0) == (sorted(pairs), [])


def test_batches_are_reproducible_per_epoch_and_resume_where_they_left_off(small_dataset):
    folder = os.path.join(small_dataset, 'training')
    first = helper.gen_batch_function(folder, SMALL_SHAPE, seed=5)
    epochs = [[batch_images.copy() for batch_images, _ in first(4)] for _ in range(3)]
    again = helper.gen_batch_function(folder, SMALL_SHAPE, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(epochs[0], [batch for batch, _ in again(4)]))
    resumed = helper.gen_batch_function(folder, SMALL_SHAPE, seed=5, first_epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(epochs[2], [batch for batch, _ in resumed(4)]))
    assert not all(np.array_equal(a, b) for a, b in zip(epochs[0], epochs[1])), 'reshuffled every epoch'


def test_augment_batch_moves_images_and_labels_together():
    rng = np.random.default_rng(0)
    batch_images = np.zeros((16, 32, 48, 3), np.uint8)
    batch_images[:, :, :20] = 200  # a bright road on the left
    labels = np.zeros((16, 32, 48, 2), bool)
    labels[:, :, :20, 1] = True
    labels[:, :, 20:, 0] = True
    labels[:, 0, :, :] = False  # a don't-care row
    augmented, augmented_labels = batches.augment_batch(rng, batch_images, labels)
    assert augmented.shape == batch_images.shape and augmented.dtype == np.uint8 and augmented_labels.dtype == bool
    assert augmented_labels.sum(axis=-1).max() == 1, "still one-hot (or don't care)"
    flipped = 0
    for image, label in zip(augmented, augmented_labels):
        road, rest = image[label[..., 1]].mean(), image[label[..., 0]].mean()
        assert road > rest + 50, 'the road pixels are still the bright ones'
        flipped += label[5, -1, 1]
    assert 0 < flipped < 16, 'some images flipped, some not'
    assert not np.array_equal(augmented.mean(axis=(1, 2, 3)), batch_images.mean(axis=(1, 2, 3)))


def test_augment_reaches_the_batches_only_when_asked(small_dataset):
    pairs = datasets.kitti_road_pairs(os.path.join(small_dataset, 'training'))
    plain = [b.copy() for b, _ in batches.TrainingBatches(pairs, SMALL_SHAPE, seed=1)(12)]
    again = [b.copy() for b, _ in batches.TrainingBatches(pairs, SMALL_SHAPE, seed=1)(12)]
    augmented = [b.copy() for b, _ in batches.TrainingBatches(pairs, SMALL_SHAPE, seed=1, augment=True)(12)]
    assert np.array_equal(plain[0], again[0]) and not np.array_equal(plain[0], augmented[0])


# --------------------------------------------------------------------------- CamVid

def test_camvid_layout_is_detected_paired_and_decoded(new_folder, small_dataset):
    root = write_camvid(new_folder('camvid'))
    assert datasets.is_camvid(root) and not datasets.is_camvid(os.path.dirname(small_dataset))
    assert not datasets.has_camvid_test(root) and datasets.has_camvid_test(write_camvid(new_folder('camvid'),
                                                                                        with_test=True))
    pairs = datasets.camvid_pairs(root, 'train')
    assert [datasets.camvid_drive(image) for image, _ in pairs] == ['0001TP', '0001TP', '0006R0', '0006R0']
    onehot = datasets.camvid_label_to_onehot(images.read_rgb(pairs[0][1]))
    assert onehot[10:, :, 1].all() and onehot[1:10, :, 0].all() and not onehot[0].any()
    os.remove(os.path.join(root, 'valannot', '0016E5_000001.png'))
    with pytest.raises(errors.DatasetError) as caught:
        datasets.camvid_pairs(root, 'val')
    assert '0016E5_000001.png' in str(caught.value) and 'no label' in str(caught.value), str(caught.value)
    with pytest.raises(errors.DatasetError) as caught:
        datasets.camvid_pairs(root, 'test')
    assert os.path.join(root, 'test') + ' does not exist' in str(caught.value), str(caught.value)
    assert 'SegNet' in str(caught.value), str(caught.value)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[:] = (128, 64, 128)
    with pytest.raises(errors.DatasetError) as caught:
        datasets.camvid_label_to_onehot(colour, 'c.png')
    assert 'c.png' in str(caught.value) and 'annot' in str(caught.value), str(caught.value)


def test_real_camvid_labels_decode_to_road_and_unlabelled():
    camvid = os.path.join(SHARED_DATA, 'camvid')
    if not os.path.isdir(camvid):
        pytest.skip('CamVid is not at %s (../shared is only on development machines)' % camvid)
    pairs = datasets.camvid_pairs(camvid, 'val')
    assert len(pairs) == 101 and len(datasets.camvid_pairs(camvid, 'train')) == 367
    onehot = datasets.camvid_label_to_onehot(images.read_rgb(pairs[0][1]))
    assert onehot.shape == (360, 480, 2) and 0.1 < onehot[..., 1].mean() < 0.6
    assert {datasets.camvid_drive(image) for image, _ in pairs} == {'0016E5'}


def test_real_kitti_sample_decodes_at_every_size():
    kitti = os.path.join(SHARED_DATA, 'kitti_road_sample', 'data_road')
    if not os.path.isdir(kitti):
        pytest.skip('the KITTI sample is not at %s (../shared is only on development machines)' % kitti)
    get_batches_fn = helper.gen_batch_function(os.path.join(kitti, 'training'), SMALL_SHAPE)
    batch_images, labels = next(get_batches_fn(2))
    assert batch_images.shape == (2,) + SMALL_SHAPE + (3,) and 0.05 < labels[..., 1].mean() < 0.5
    sizes = {iio.imread(path).shape for path in datasets.kitti_test_images(kitti)}
    assert len(sizes) == 4, sizes
