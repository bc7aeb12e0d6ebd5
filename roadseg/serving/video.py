"""Videos for python main.py infer: frames in from any container ffmpeg reads, H.264 MP4 out.

imageio's ffmpeg plugin runs the ffmpeg binary that the imageio-ffmpeg wheel ships: no system ffmpeg is
needed. Frames stream through the model a batch at a time, so memory holds one batch however long the video.
An output keeps the input's frames (each once: ffmpeg's -fps_mode passthrough, never duplicated or dropped to
fill a constant rate), size and frame rate; it has no audio track. A variable-frame-rate input (phones,
browsers) is written at its average rate, which keeps its frame count and its duration but not each frame's own
timing, and the summary line says so.
"""
import contextlib
import fractions
import statistics
import subprocess
import time

import imageio.v2 as imageio
import imageio_ffmpeg
import numpy as np
from tqdm import tqdm

from roadseg import atomic
from roadseg.errors import DatasetError, OutputError

VIDEO_EXTENSIONS = ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm')
OUTPUT_SUFFIXES = ('_overlay.mp4', '_road.mp4')
BATCH_SIZE = 8
# x264's constant rate factor (18: visually lossless for most footage) and speed preset: 'medium' made the
# encoder, not the model, the bottleneck of a small model's video infer (docs/performance.md has the figures).
CRF = 18
PRESET = 'veryfast'
# sRGB frames have BT.709 primaries: tagging the frames (setparams) and the stream so makes ffmpeg convert to YUV
# with BT.709's matrix and players convert back with the same one (untagged, ffmpeg would convert with BT.601's
# and HD players would assume BT.709's: shifted colours).
COLOUR_TAGS = ('-vf', 'setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv',
               '-colorspace', 'bt709', '-color_primaries', 'bt709', '-color_trc', 'bt709', '-color_range', 'tv')
ISO_MEDIA_BOXES = (b'ftyp', b'moov', b'mdat', b'wide', b'free', b'skip')  # mp4, mov, m4v: the box type at byte 4
MATROSKA_MAGIC = b'\x1a\x45\xdf\xa3'  # mkv and webm (EBML)
IMAGE_SIGNATURES = (b'\x89PNG', b'\xff\xd8\xff', b'BM')  # PNG, JPEG, BMP
NTSC_DRIFT = 0.005
# Every decoded frame once, with its own timestamp: the image pipe's default (cfr) duplicates frames of a
# variable-frame-rate video to fill a constant rate, and drops some.
PASSTHROUGH = ['-fps_mode', 'passthrough']
# Intervals between timestamps that differ by more than this share of their median (or than one tick of the
# container's clock, which rounds: a 29.97 fps mkv alternates 33 and 34 ms) make a variable frame rate.
VFR_SPREAD = 0.1
TIMESTAMPS_TIMEOUT = 120
NO_STREAM_TO_OUTPUT = 'Output file does not contain any stream'


IMAGE_FORMATS = dict(zip(IMAGE_SIGNATURES, ('.png', '.jpg', '.bmp')))


def content_kind(path):
    """What the first bytes of `path` say it is: 'video' (ISO media, AVI, Matroska/WebM), an image's extension
    ('.png', '.jpg', '.bmp'), or None when they say nothing known (or the file does not read)."""
    try:
        with open(path, 'rb') as f:
            head = f.read(12)
    except OSError:
        return None
    if head[4:8] in ISO_MEDIA_BOXES or (head[:4] == b'RIFF' and head[8:12] == b'AVI ') or head[:4] == MATROSKA_MAGIC:
        return 'video'
    for signature, extension in IMAGE_FORMATS.items():
        if head.startswith(signature):
            return extension
    return None


def is_video(path):
    """Whether `path` is a video: by its first bytes (ISO media, AVI, Matroska/WebM), else by its extension."""
    kind = content_kind(path)
    return kind == 'video' if kind else path.lower().endswith(VIDEO_EXTENSIONS)


def ffmpeg_reason(error):
    """The line of ffmpeg's log (which imageio passes on whole) that says what is wrong with the file."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    complaints = [line.split('] ', 1)[1] for line in lines if line.startswith('[') and '] ' in line]
    reason = (complaints or lines or [type(error).__name__])[0]
    # imageio asks ffmpeg for frames only: a file without video leaves that output empty.
    return 'no video stream in it' if reason == NO_STREAM_TO_OUTPUT else reason


class FrameReader:
    """imageio-ffmpeg's frames of a video, each decoded frame once (PASSTHROUGH), as HxWx3 uint8 arrays.

    ffmpeg is given the file itself, so it reads it by its content whatever its name (imageio's reader goes by
    the extension: it refuses an MP4 named .png).
    """

    def __init__(self, path):
        self.frames = imageio_ffmpeg.read_frames(path, output_params=list(PASSTHROUGH))
        self.meta = next(self.frames)

    def iter_data(self):
        width, height = self.meta['size']
        for data in self.frames:
            yield np.frombuffer(data, np.uint8).reshape(height, width, 3)

    def close(self):
        self.frames.close()


def open_video(path):
    """A FrameReader of `path` and its metadata; DatasetError naming the file if ffmpeg cannot read it."""
    reader = None
    try:
        reader = FrameReader(path)
        meta = reader.meta
    except Exception as error:  # imageio-ffmpeg passes ffmpeg's failures on as OSError, RuntimeError, ...
        if reader is not None:
            reader.close()
        raise DatasetError('cannot read video %s (ffmpeg: %s); give a complete mp4, mov, avi or mkv file that a '
                           'video player plays' % (path, ffmpeg_reason(error))) from error
    if not meta.get('fps'):
        reader.close()
        raise DatasetError('cannot read video %s: ffmpeg finds no frame rate in it; re-mux it (e.g. ffmpeg -i '
                           'IN -c copy OUT.mp4)' % path)
    return reader, meta


def frame_rate(fps):
    """The exact rate behind ffmpeg's 2-decimal figure: 29.97 is NTSC's 30000/1001 (2997/100 would drift from the
    input by a frame every 9 hours and change the file's time base)."""
    ntsc = round(fps * 1.001)
    if fps != round(fps) and abs(fps - ntsc / 1.001) < NTSC_DRIFT:
        return fractions.Fraction(ntsc * 1000, 1001)
    return fractions.Fraction(fps).limit_denominator(1001)


def frame_timestamps(path):
    """The presentation times (seconds, sorted) of the video stream's frames and the last one's duration, read by
    ffmpeg from the container without decoding; None if ffmpeg cannot list them."""
    try:
        listed = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-nostdin', '-v', 'error', '-i', path, '-map',
                                 '0:v:0', '-c', 'copy', '-f', 'framecrc', '-'], capture_output=True, text=True,
                                timeout=TIMESTAMPS_TIMEOUT, check=True).stdout
        tick = next(fractions.Fraction(line.split(':')[1].strip()) for line in listed.splitlines()
                     if line.startswith('#tb 0:'))
        packets = sorted((int(fields[2]), int(fields[3])) for fields in
                         (line.split(',') for line in listed.splitlines() if line and not line.startswith('#')))
    except (OSError, subprocess.SubprocessError, StopIteration, ValueError, IndexError, ZeroDivisionError):
        return None
    if not packets:
        return None
    return [pts * tick for pts, _ in packets], packets[-1][1] * tick, tick


class Timing:
    """How a video's frames are timed: its rate (fractions.Fraction) for the encoder, the frames its container
    holds, and for a variable frame rate the range of its rates (else None)."""

    def __init__(self, meta, timestamps):
        self.rate, self.announced, self.variable = frame_rate(meta['fps']), None, None
        if timestamps is None or len(timestamps[0]) < 3:
            return
        times, last_duration, tick = timestamps
        intervals = [later - earlier for earlier, later in zip(times, times[1:])]
        median = statistics.median(intervals)
        if median <= 0:
            return
        self.announced = len(times)
        if max(intervals) - min(intervals) <= max(tick, VFR_SPREAD * median):
            return
        duration = times[-1] - times[0] + (last_duration if last_duration > 0 else median)
        self.rate = fractions.Fraction(len(times) / duration).limit_denominator(1001)
        self.variable = (1 / max(intervals), 1 / min(i for i in intervals if i > 0))

    def note(self, count):
        if self.variable is None:
            return None
        return ('variable frame rate (%.3g to %.3g fps): its %d frames are written once each at their average rate '
                '%.5g fps, which keeps the duration but not each frame\'s own timing (the output has a constant rate)'
                % (float(self.variable[0]), float(self.variable[1]), count, float(self.rate)))


def pixel_format(height, width):
    """yuv420p, which every player plays, needs even sides; an odd side gets yuv444p (H.264 High 4:4:4) instead,
    which keeps the size exact (4:2:0 H.264 cannot even crop to it) but which some players (browsers,
    QuickTime) do not play."""
    return 'yuv420p' if height % 2 == 0 and width % 2 == 0 else 'yuv444p'


def open_encoder(path, fps, pix_fmt):
    """An H.264 writer at `path`; macro_block_size=1 keeps imageio from resizing to multiples of 16."""
    return imageio.get_writer(path, format='FFMPEG', fps=fps, codec='libx264', pixelformat=pix_fmt, quality=None,
                              macro_block_size=1, ffmpeg_log_level='error',
                              output_params=['-crf', str(CRF), '-preset', PRESET, '-movflags', '+faststart',
                                             *COLOUR_TAGS])


def decoded_frames(reader, path):
    """The video's RGB frames, one at a time; DatasetError naming the file if decoding stops with an error."""
    count = 0
    try:
        for frame in reader.iter_data():
            yield np.asarray(frame)
            count += 1
    except Exception as error:  # as in open_video
        raise DatasetError('cannot read video %s after frame %d (ffmpeg: %s)' % (path, count, ffmpeg_reason(error))) \
            from error


def batched(frames, size):
    """Lists of `size` frames (the last one shorter): the model's batches, with no more than one in memory."""
    batch = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def encode_predictions(predict, frames, outputs, fps, pix_fmt, bar):
    """Run `frames` through `predict` a batch at a time; write render(frame, probabilities) of each (path, render)
    in `outputs` as a video at `path`. Returns the number of frames."""
    count = 0
    with contextlib.ExitStack() as writers:
        encoders = [(writers.enter_context(contextlib.closing(open_encoder(path, fps, pix_fmt))), render)
                    for path, render in outputs]
        for batch in batched(frames, BATCH_SIZE):
            for frame, probabilities in zip(batch, predict(batch)):
                for encoder, render in encoders:
                    _append(encoder, render(frame, probabilities))
            count += len(batch)
            bar.update(len(batch))
    return count


def _append(encoder, frame):
    try:
        encoder.append_data(frame)
    except OSError as error:  # ffmpeg's process stopped: imageio's message holds its whole command line
        raise OutputError('ffmpeg stopped while writing a video (%s; its own message is above): is the disk full? '
                          'Nothing was kept' % str(error).strip().splitlines()[0]) from error


def check_written(path, size):
    """Read back the header of a written video: ffmpeg finishes a file in its own process, which imageio does
    not check, and a file it could not finish must not be kept."""
    try:
        with contextlib.closing(imageio.get_reader(path, format='FFMPEG')) as reader:
            written_size = tuple(reader.get_meta_data()['size'])
    except Exception as error:  # as in open_video
        raise OutputError('ffmpeg did not finish a video (%s): is the disk full? Nothing was kept'
                          % ffmpeg_reason(error)) from error
    if written_size != tuple(size):
        raise OutputError('ffmpeg wrote a video of %dx%d where %dx%d was asked; nothing was kept'
                          % (written_size + tuple(size)))


def write_predictions(predict, path, outputs):
    """Write the videos `outputs` ([(target path, render(frame, probabilities))]) of the video at `path`.

    Each target is written atomically. Prints a progress bar in frames, then a summary with frames/s.
    Returns the number of frames. DatasetError if `path` cannot be read: no target is then written.
    """
    reader, meta = open_video(path)
    width, height = meta['size']
    timing = Timing(meta, frame_timestamps(path))
    fps = timing.rate
    announced = timing.announced or round(meta['duration'] * fps)
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as staging:
            staged = [(staging.enter_context(atomic.staged_path(target)), render) for target, render in outputs]
            with tqdm(total=announced or None, desc=path, unit='frame', leave=False) as bar:
                count = encode_predictions(predict, decoded_frames(reader, path), staged, fps,
                                           pixel_format(height, width), bar)
            if not count:
                raise DatasetError('cannot read video %s: not one frame of it decodes' % path)
            for temporary, _ in staged:
                check_written(temporary, (width, height))
    finally:
        reader.close()
    seconds = time.perf_counter() - started
    tqdm.write('%s: %d frames of %dx%d at %.5g fps in %.1fs, %.1f frames/s (decode, model and encode, on this '
               'machine)%s -> %s' % (path, count, width, height, float(fps), seconds, count / seconds,
                                     _notes(height, width, count, announced, timing.note(count)),
                                     ', '.join(target for target, _ in outputs)))
    return count


def _notes(height, width, count, announced, timing_note=None):
    notes = [timing_note] if timing_note else []
    if pixel_format(height, width) != 'yuv420p':
        notes.append('odd size: written as H.264 4:4:4 (yuv444p) to keep it; browsers and QuickTime may not play '
                     'it')
    if count < announced - 1:
        notes.append('only %d of the %d frames its container announces decoded: the file may be truncated'
                     % (count, announced))
    return ''.join('; ' + note for note in notes)
