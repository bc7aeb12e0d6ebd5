"""Every constant and default the project's parts share, in one place: the network's contract, the recipes
(named tables of flag defaults), and the typed configuration a run is saved and resumed with.

RunConfig is built from the flags once, saved as run.json and read back on --resume. ModelInfo is the part a
trained model carries into its export: what it was trained on, so that evaluate and infer read it instead of
guessing.
"""
import dataclasses
import json
from typing import List, NamedTuple, Tuple

from roadseg.errors import RunFolderError

# --------------------------------------------------------------------------- the network's contract

# The classic vgg.zip: a SavedModel with this tag and these five tensors.
VGG_TAG = 'vgg16'
VGG_TENSOR_NAMES = ('image_input:0', 'keep_prob:0', 'layer3_out:0', 'layer4_out:0', 'layer7_out:0')
# The decoder's output has the input's size when both sides are multiples of this (model.layers).
OUTPUT_MULTIPLE = 8
# The pool4/pool3 scalings of the at-once FCN-8s: they bring the pretrained VGG16's large pool3 and pool4
# activations to the scale of its fc7 scores.
AT_ONCE_SKIP_SCALES = (0.01, 0.0001)
# TensorFlow's own AdamOptimizer default, the classic exercise's.
ADAM_EPSILON = 1e-8
ONNX_OPSET = 17
# --average-weights: a training checkpoint holds the mean of each trainable variable under this scope.
WEIGHT_AVERAGE_SCOPE = 'weight_average'
# --scales: above this a scale's input takes more than 16 times the memory of --image-shape's.
MAX_SCALE = 4.0
# A run folder is the folder that holds this file (its RunConfig).
RUN_CONFIG_FILE = 'run.json'
# The deployed forms that trade exactness for speed (export --int8, --tflite): each is kept only if its road MaxF
# and IoU on the run's labelled images stay within this many points (of 100) of the float SavedModel's, either
# way: a form that scores differently is not the model that was validated (--max-change).
DEPLOYED_MAX_CHANGE_POINTS = 0.5
# At most this many images calibrate an int8 model (the run's validation and test images, or
# --calibration-images), each at the network's input size (see serving/quantize.py for the memory it takes).
CALIBRATION_IMAGES = 16
# export --tflite --tflite-type: the weights' type; int8 also quantizes the activations it can, calibrated.
TFLITE_TYPES = ('float32', 'float16', 'int8')
DEFAULT_TFLITE_TYPE = 'float16'

# --------------------------------------------------------------------------- data

VGG_SOURCES = ('udacity', 'keras')
# CamVid's drive held out for validation by default: 101 images that no CamVid training sees.
DEFAULT_VAL_DRIVE = '0006R0'
# --val-drive none: every CamVid drive trains, and the last epoch is the model.
NO_VAL_DRIVE = 'none'
# Cityscapes' train cities held out to choose the checkpoint: 290 of the 2,975 train images (bochum 96,
# krefeld 99, ulm 95), about a tenth, from three cities so that one city's look does not decide.
DEFAULT_VAL_CITIES = ('bochum', 'krefeld', 'ulm')
DEFAULT_VAL_FRACTION = 1 / 6


class DemoVGG(NamedTuple):
    """A demo's random VGG16-shaped encoder, built if absent."""
    folder: str        # in the demo folder
    width: float       # channel multiplier
    norm_groups: int   # group normalisation after every convolution (0: none)


GENERATED_DEMO_VGG = DemoVGG('vgg', 0.125, 0)
# Group norm: from scratch on CamVid's few hundred images it lifted the dusk drive's held-out fold most
# (docs/experiments.md); its own folder, so that an encoder built without it is never picked up instead.
CAMVID_DEMO_VGG = DemoVGG('vgg-camvid-gn8', 0.25, 8)
# The flags that apply to one dataset only, per command and dataset (by the dest argparse gives them): a flag given
# for a dataset that does not take it is refused in one line (splits.check_dataset_flags), never ignored.
DATASET_FLAGS = {
    'train': {'kitti': ('labels', 'val_fraction', 'kitti_url'), 'camvid': ('val_drive',),
              'cityscapes': ('val_cities',)},
    'demo': {'generated': (), 'camvid': ('val_drive', 'folds', 'classes')},
    'evaluate': {'kitti': (), 'camvid': ('split',), 'cityscapes': ('split',)},
}
DATASET_NAMES = {'kitti': 'KITTI Road', 'kitti-mask': 'KITTI Road', 'camvid': 'CamVid', 'cityscapes': 'Cityscapes',
                 'generated': 'generated roads'}
# The KITTI road benchmark's bird's-eye view (devkit_road's BirdsEyeView): a metric grid on the road plane, x from
# -10 to 10 m (left to right) and z from 6 to 46 m ahead of the camera, in cells of 0.05 m: 800 rows (the farthest
# first) of 400 cells. Benchmark results are submitted and scored on this grid.
BEV_X_RANGE = (-10.0, 10.0)
BEV_Z_RANGE = (6.0, 46.0)
BEV_RESOLUTION = 0.05
BEV_SHAPE = (800, 400)
# KITTI Road's test set: images per category (devkit_road's readme), 290 in all.
KITTI_TEST_IMAGES = {'um': 96, 'umm': 94, 'uu': 100}
# The classic augmentation: zoom 1-1.15, brightness and contrast +-20 % (colour-jitter strength 0.2).
CLASSIC_ZOOM = (1.0, 1.15)
CLASSIC_COLOR_JITTER = 0.2

# --------------------------------------------------------------------------- recipes: the training flags' defaults

# `python main.py train` on KITTI Road (and CamVid): the classic exercise's settings.
KITTI_RECIPE = dict(epochs=25, batch_size=8, learning_rate=1e-4, keep_prob=0.5, image_shape=(160, 576),
                    skip_scales=AT_ONCE_SKIP_SCALES, augment=True, clip_norm=0.0, lr_schedule='constant',
                    warmup_epochs=0, label_smoothing=0.0, lovasz_weight=0.0, adam_epsilon=ADAM_EPSILON,
                    late_adam_epsilon=0.0, zoom=CLASSIC_ZOOM, color_jitter=CLASSIC_COLOR_JITTER, cutmix=0.0,
                    flip_average=False, scales=(1.0,), average_weights=False)
# Cityscapes: a quarter of 1024x2048 on each side, so that a full-width VGG16 trains on a CPU; on a GPU,
# 512 1024 (or the full 1024 2048) gives finer masks.
CITYSCAPES_RECIPE = dict(KITTI_RECIPE, image_shape=(256, 512))
# `python main.py demo`: generated roads and a small random encoder (no pretrained scales: skips at 1).
GENERATED_DEMO_RECIPE = dict(KITTI_RECIPE, epochs=15, learning_rate=3e-4, keep_prob=1.0, image_shape=(96, 320),
                             skip_scales=(1.0, 1.0), augment=False)
# `python main.py demo --data-dir <CamVid>`: judged by leave-one-drive-out (demo --folds, docs/experiments.md), then
# trained on every drive, zoomed nearer and farther than the classic range, half the images with a box of another
# pasted in (CutMix); each image averaged with its mirror at four sizes (the dusk drive gains from the smaller,
# the daylight ones from the larger).
CAMVID_DEMO_RECIPE = dict(GENERATED_DEMO_RECIPE, epochs=40, image_shape=(176, 240), learning_rate=1e-4,
                          augment=True, color_jitter=0.4, lr_schedule='cosine', warmup_epochs=2, clip_norm=1.0,
                          zoom=(0.75, 1.35), cutmix=0.5, label_smoothing=0.1,
                          val_drive=NO_VAL_DRIVE, flip_average=True, scales=(0.8, 1.0, 1.2, 1.4))


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    dataset: str                      # kitti, kitti-mask, camvid, cityscapes
    classes: str                      # road, all
    class_names: Tuple[str, ...]
    road_class: int
    image_shape: Tuple[int, int]      # the network's input size; images of any size are resized to it
    flip_average: bool = False        # probabilities averaged with those of the mirrored image
    scales: Tuple[float, ...] = (1.0,)  # probabilities averaged over the image at these multiples of image_shape

    @property
    def num_classes(self):
        return len(self.class_names)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        return cls(fields['dataset'], fields['classes'], tuple(fields['class_names']), int(fields['road_class']),
                   tuple(fields['image_shape']), bool(fields.get('flip_average', False)),
                   tuple(float(scale) for scale in fields.get('scales', (1.0,))))


@dataclasses.dataclass
class RunConfig:
    dataset: str
    classes: str
    data_root: str
    vgg_path: str
    image_shape: Tuple[int, int]
    batch_size: int
    learning_rate: float
    keep_prob: float
    skip_scales: Tuple[float, float]
    seed: int
    epochs: int
    augment: bool
    freeze_encoder: bool
    xla: bool
    mixed_precision: bool
    clip_norm: float
    train: List[Tuple[str, str]]
    val: List[Tuple[str, str]]
    test: List[Tuple[str, str]]       # labelled images scored once, at the end, with the best checkpoint
    test_images: List[str]            # images the run's overlays are made of
    # Settings added since the first run.json: a run written without them resumes with these, the classic ones.
    zoom: Tuple[float, float] = CLASSIC_ZOOM
    color_jitter: float = CLASSIC_COLOR_JITTER
    cutmix: float = 0.0                # share of training images with a box of another one pasted in
    lr_schedule: str = 'constant'
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    lovasz_weight: float = 0.0         # the Lovasz-softmax loss's weight beside the cross-entropy
    adam_epsilon: float = ADAM_EPSILON
    late_adam_epsilon: float = 0.0     # 0: adam_epsilon throughout
    flip_average: bool = False         # the model (validation, export) averages each image with its mirror
    scales: Tuple[float, ...] = (1.0,)  # ... and over these sizes of it (multiples of image_shape)
    average_weights: bool = False      # the model is the mean of the weights of the epochs after the warm-up

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text, where):
        try:
            fields = json.loads(text)
            for name in ('image_shape', 'skip_scales', 'zoom', 'scales'):
                if name in fields:
                    fields[name] = tuple(fields[name])
            for split in ('train', 'val', 'test'):
                fields[split] = [tuple(pair) for pair in fields[split]]
            return cls(**fields)
        except (ValueError, KeyError, TypeError) as error:
            raise RunFolderError('%s is damaged or from another version (%s: %s); start a new run, or restore the '
                                 'file from a backup' % (where, type(error).__name__, error)) from error

    # Settings a resumed run may change: each takes effect from the next epoch and is recorded in run.json.
    RESUMABLE = ('epochs', 'learning_rate', 'keep_prob', 'batch_size', 'clip_norm', 'augment', 'xla', 'zoom',
                 'color_jitter', 'cutmix', 'lr_schedule', 'warmup_epochs', 'label_smoothing', 'lovasz_weight',
                 'adam_epsilon', 'late_adam_epsilon', 'flip_average', 'scales')
