"""One typed configuration per run, built from the flags once, saved as run.json and read back on --resume.

ModelInfo is the part a trained model carries into its export: what it was trained on, so that evaluate
and infer read it instead of guessing.
"""
import dataclasses
import json
from typing import List, Tuple

import batches
from errors import RunFolderError

VGG_SOURCES = ('udacity', 'keras')
LR_SCHEDULES = ('constant', 'cosine')  # training.LR_SCHEDULES
# CamVid's drive held out for validation by default: 101 images that no CamVid training sees (README, CamVid).
DEFAULT_VAL_DRIVE = '0006R0'
# The demo's random VGG16-shaped encoders, built if absent: (folder in the demo folder, width multiplier).
GENERATED_DEMO_VGG = ('vgg', 0.125)
CAMVID_DEMO_VGG = ('vgg-camvid', 0.25)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    dataset: str                      # kitti, kitti-mask, camvid, cityscapes
    classes: str                      # road, all
    class_names: Tuple[str, ...]
    road_class: int
    image_shape: Tuple[int, int]      # the network's input size; images of any size are resized to it

    @property
    def num_classes(self):
        return len(self.class_names)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text):
        fields = json.loads(text)
        return cls(fields['dataset'], fields['classes'], tuple(fields['class_names']), int(fields['road_class']),
                   tuple(fields['image_shape']))


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
    zoom: Tuple[float, float] = batches.Augmentation.zoom
    color_jitter: float = batches.Augmentation.color
    lr_schedule: str = 'constant'
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    adam_epsilon: float = 1e-8         # model.ADAM_EPSILON
    late_adam_epsilon: float = 0.0     # 0: adam_epsilon throughout

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text, where):
        try:
            fields = json.loads(text)
            for name in ('image_shape', 'skip_scales', 'zoom'):
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
                 'color_jitter', 'lr_schedule', 'warmup_epochs', 'label_smoothing', 'adam_epsilon',
                 'late_adam_epsilon')
