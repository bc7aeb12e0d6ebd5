"""Tests of video in python main.py infer (video.py, files.py): round trips, odd sizes, bad videos.

Each test makes its videos itself, from generated road scenes, with the ffmpeg that imageio-ffmpeg ships.
Inputs are written losslessly (FFV1, PNG) where a test compares pixels, so that only the output's H.264
coding stands between what the model saw and what the test reads back.
"""
import fractions
import os
import re
import subprocess

import imageio.v2 as imageio
import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest

from roadseg.commands import infer
from roadseg.data import images, roadgen
from roadseg.errors import OutputError
from roadseg.serving import inference, video
from tests.helpers import CHILD_TIMEOUT, run_main, write_png

NTSC = fractions.Fraction(30000, 1001)
SHAPE = (96, 160)
# Mean absolute difference (0-255) of 2x2 block means that x264 (CRF 18, veryfast) leaves on these small, noisy
# frames with the test model's speckled overlay: 8.0 measured (3.0 on the grey video), against 65 that the
# overlay's green adds to the road.
CODEC_TOLERANCE = 11


def _road_frames(count, shape=SHAPE, seed=7):
    rng = np.random.default_rng(seed)
    return np.stack([roadgen.render_scene(rng, shape)[0] for _ in range(count)])


def _write_video(path, frames, fps=12, codec='ffv1', pixel_format='bgr0'):
    writer = imageio.get_writer(path, format='FFMPEG', fps=fps, codec=codec, pixelformat=pixel_format, quality=None,
                                macro_block_size=1, ffmpeg_log_level='error')
    for frame in frames:
        writer.append_data(frame)
    writer.close()
    return path


def _read_video(path):
    """(frames [N, H, W, 3], imageio's metadata) of a video."""
    reader = imageio.get_reader(path, format='FFMPEG')
    try:
        return np.stack([frame for frame in reader.iter_data()]), reader.get_meta_data()
    finally:
        reader.close()


def _block_means(frames):
    """Means over 2x2 blocks: what H.264's 4:2:0 keeps of colour (the model of the small test run paints a
    speckled mask, whose pixel-sized colour edges 4:2:0 cannot hold)."""
    count, height, width = frames.shape[:3]
    blocks = np.asarray(frames, np.float32).reshape(count, height // 2, 2, width // 2, 2, *frames.shape[3:])
    return blocks.mean(axis=(2, 4))


def _predicted(run, frames):
    model = inference.ExportedModel(run)
    try:
        return np.concatenate([model(list(frames[i:i + video.BATCH_SIZE]))
                               for i in range(0, len(frames), video.BATCH_SIZE)]), model.road_class
    finally:
        model.close()


def test_video_round_trip_keeps_frames_size_and_rate_and_paints_only_the_road(small_trained_run, tmp_path):
    run = small_trained_run
    folder = str(tmp_path)
    frames = _road_frames(10)
    source = _write_video(os.path.join(folder, 'drive.mkv'), frames, fps=NTSC)
    out = os.path.join(folder, 'out')
    stdout, exit_value = run_main(['infer', '--model', run, source, '--out', out, '--masks'])
    assert exit_value is None, stdout
    assert 'frames/s' in stdout and 'infer: 1 of 1 videos written' in stdout, stdout
    assert sorted(os.listdir(out)) == ['drive_overlay.mp4', 'drive_road.mp4']
    source_meta = _read_video(source)[1]
    overlay, overlay_meta = _read_video(os.path.join(out, 'drive_overlay.mp4'))
    road_video, road_meta = _read_video(os.path.join(out, 'drive_road.mp4'))
    for written, meta in ((overlay, overlay_meta), (road_video, road_meta)):
        assert written.shape == frames.shape  # frame count, height, width
        assert meta['fps'] == source_meta['fps'] == 29.97 and meta['duration'] == source_meta['duration']
        assert meta['codec'] == 'h264' and meta['pix_fmt'].startswith('yuv420p'), meta

    probabilities, road_class = _predicted(run, frames)
    expected = np.stack([images.road_overlay(frame, p[..., road_class]) for frame, p in zip(frames, probabilities)])
    assert np.abs(_block_means(overlay) - _block_means(expected)).mean() < CODEC_TOLERANCE
    road_share = _block_means(probabilities[..., road_class] > images.ROAD_THRESHOLD)
    road, not_road = road_share == 1, road_share == 0
    assert road.mean() > 0.01 and not_road.mean() > 0.1, (road.mean(), not_road.mean())  # both to compare
    change = _block_means(overlay) - _block_means(frames)
    assert change[road][:, 1].mean() > 30, change[road].mean(axis=0)  # painted green where the model sees road
    assert np.abs(change[not_road]).mean() < CODEC_TOLERANCE, np.abs(change[not_road]).mean()  # and nowhere else
    expected_grey = images.probability_image(probabilities[..., road_class])
    assert np.abs(_block_means(road_video[..., 0]) - _block_means(expected_grey)).mean() < CODEC_TOLERANCE


def test_exact_frame_rates_behind_ffmpegs_rounded_ones():
    assert video.frame_rate(29.97) == NTSC
    assert video.frame_rate(23.98) == fractions.Fraction(24000, 1001)
    assert video.frame_rate(59.94) == fractions.Fraction(60000, 1001)
    assert video.frame_rate(25.0) == 25 and video.frame_rate(12.5) == fractions.Fraction(25, 2)


def test_odd_sized_video_keeps_its_size_as_h264_444(small_trained_run, tmp_path):
    run = small_trained_run
    folder = str(tmp_path)
    frames = _road_frames(5, (95, 157))
    source = _write_video(os.path.join(folder, 'odd.mov'), frames, codec='png', pixel_format='rgb24')
    out = os.path.join(folder, 'out')
    stdout, exit_value = run_main(['infer', '--model', run, source, '--out', out])
    assert exit_value is None, stdout
    assert 'odd size' in stdout and 'yuv444p' in stdout, stdout
    overlay, meta = _read_video(os.path.join(out, 'odd_overlay.mp4'))
    assert overlay.shape == frames.shape and meta['fps'] == 12 and meta['pix_fmt'].startswith('yuv444p'), meta


def test_corrupt_video_gives_one_line_and_the_other_inputs_still_run(small_trained_run, tmp_path):
    run = small_trained_run
    folder = str(tmp_path)
    frames = _road_frames(3)
    good_video = _write_video(os.path.join(folder, 'good.avi'), frames, codec='mjpeg', pixel_format='yuvj420p')
    image = write_png(os.path.join(folder, 'still.png'), frames[0])
    with open(os.path.join(folder, 'broken.mp4'), 'wb') as f:  # an MP4 header, then nothing playable
        f.write(b'\x00\x00\x00\x18ftypmp42' + bytes(4000))
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-v', 'error', '-f', 'lavfi', '-i', 'sine=duration=0.5',
                    os.path.join(folder, 'sound.mp4')], check=True, timeout=CHILD_TIMEOUT)
    out = os.path.join(folder, 'out')
    stdout, exit_value = run_main(['infer', '--model', run, good_video, image, os.path.join(
        folder, 'broken.mp4'), os.path.join(folder, 'sound.mp4'), '--out', out])
    assert exit_value == 1, stdout
    for name, reason in (('broken.mp4', 'ffmpeg: moov atom not found'), ('sound.mp4', 'ffmpeg: no video stream')):
        lines = [line for line in stdout.splitlines() if name in line]
        assert len(lines) == 1 and 'cannot read video' in lines[0] and reason in lines[0], stdout
    assert 'Traceback' not in stdout
    assert 'infer: 1 of 1 images and 1 of 3 videos written' in stdout, stdout
    assert sorted(os.listdir(out)) == ['good_overlay.mp4', 'still_overlay.png']  # no staging file left behind
    assert len(_read_video(os.path.join(out, 'good_overlay.mp4'))[0]) == len(frames)


def test_videos_are_told_from_images_by_content_then_by_extension(tmp_path):
    folder = str(tmp_path)
    frames = _road_frames(2, (32, 48))
    containers = [_write_video(os.path.join(folder, 'a.mp4'), frames, codec='libx264', pixel_format='yuv420p'),
                  _write_video(os.path.join(folder, 'b.mov'), frames, codec='png', pixel_format='rgb24'),
                  _write_video(os.path.join(folder, 'c.avi'), frames, codec='mjpeg', pixel_format='yuvj420p'),
                  _write_video(os.path.join(folder, 'd.mkv'), frames)]
    assert all(video.is_video(path) for path in containers)
    renamed = os.path.join(folder, 'clip.png')
    os.rename(containers[0], renamed)
    assert video.is_video(renamed)  # an MP4 whatever its name
    picture = os.path.join(folder, 'picture.mkv')
    iio.imwrite(picture, frames[0], extension='.png')
    assert not video.is_video(picture)  # a PNG whatever its name
    for name, expected in (('unknown.mkv', True), ('unknown.bin', False)):
        with open(os.path.join(folder, name), 'wb') as f:
            f.write(b'no known signature')
        assert video.is_video(os.path.join(folder, name)) == expected


def test_video_outputs_are_planned_with_the_images_and_replace_nothing_unasked(small_trained_run, tmp_path):
    paths = ['a/drive.mp4', 'b/drive.mkv', 'c/drive.png', 'c/other.avi']
    plan = infer.planned_outputs(paths, 'out', lambda path: video.OUTPUT_SUFFIXES if path.endswith(
        video.VIDEO_EXTENSIONS) else infer.IMAGE_SUFFIXES)
    assert plan['a/drive.mp4'] == ['out/drive_mp4_overlay.mp4', 'out/drive_mp4_road.mp4']
    assert plan['b/drive.mkv'][0] == 'out/drive_mkv_overlay.mp4'
    assert plan['c/drive.png'][0] == 'out/drive_png_overlay.png'
    assert plan['c/other.avi'][0] == 'out/other_overlay.mp4'

    run = small_trained_run
    folder = str(tmp_path)
    source = _write_video(os.path.join(folder, 'drive.mkv'), _road_frames(2))
    out = os.path.join(folder, 'out')
    os.makedirs(out)
    with open(os.path.join(out, 'drive_overlay.mp4'), 'wb') as f:
        f.write(b'a file the user keeps')
    with pytest.raises(OutputError, match=re.escape('--overwrite')):
        infer.check_outputs({source: [os.path.join(out, 'drive_overlay.mp4')]}, [source], out, False)
    stdout, exit_value = run_main(['infer', '--model', run, source, '--out', out])
    assert '--overwrite' in str(exit_value), (stdout, exit_value)
    with open(os.path.join(out, 'drive_overlay.mp4'), 'rb') as f:
        assert f.read() == b'a file the user keeps'
    stdout, exit_value = run_main(['infer', '--model', run, source, '--out', out, '--overwrite'])
    assert exit_value is None, stdout
    assert len(_read_video(os.path.join(out, 'drive_overlay.mp4'))[0]) == 2


def _vfr_video(path, count=60):
    """An H.264 MP4 of `count` frames: the first third 4/30 s apart, the rest 2/30 s apart (5.33 s in all), made
    variable-frame-rate by setpts with -fps_mode vfr."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-v', 'error', '-f', 'lavfi', '-i',
                    'testsrc=size=64x48:rate=15', '-frames:v', str(count), '-vf',
                    "setpts='if(lt(N,%d),N*4/30,%d*4/30+(N-%d)*2/30)/TB'" % ((count // 3,) * 3), '-fps_mode', 'vfr',
                    '-c:v', 'libx264', '-pix_fmt', 'yuv420p', path], check=True, timeout=CHILD_TIMEOUT)
    return path


def test_variable_frame_rate_video_keeps_every_frame_once_and_its_duration_and_says_so(small_trained_run,
                                                                                       tmp_path):
    source = _vfr_video(str(tmp_path / 'phone.mp4'))
    times, _, _ = video.frame_timestamps(source)
    assert len(times) == 60 and len({b - a for a, b in zip(times, times[1:])}) == 2  # really variable
    out = str(tmp_path / 'out')
    stdout, exit_value = run_main(['infer', '--model', small_trained_run, source, '--out', out])
    assert exit_value is None, stdout
    overlay, meta = _read_video(os.path.join(out, 'phone_overlay.mp4'))
    source_frames, source_meta = _read_video(source)  # imageio's reader at a constant rate: duplicates
    assert len(overlay) == 60 < len(source_frames), (len(overlay), len(source_frames))
    assert abs(meta['duration'] - float(2 * times[-1] - times[-2] - times[0])) <= 1 / 15, meta  # within a frame
    lines = [line for line in stdout.splitlines() if 'phone.mp4: 60 frames' in line]
    assert len(lines) == 1 and 'variable frame rate (7.5 to 15 fps)' in lines[0], stdout
    assert 'written once each at their average rate 11.25 fps' in lines[0], lines[0]
    # A constant-rate video says nothing of it.
    steady = _write_video(str(tmp_path / 'steady.mkv'), _road_frames(4, (32, 48)), fps=NTSC)
    stdout, exit_value = run_main(['infer', '--model', small_trained_run, steady, '--out', out])
    assert exit_value is None and 'variable frame rate' not in stdout and ' at 29.97 fps' in stdout, stdout


def test_a_png_named_mp4_and_an_mp4_named_png_are_read_as_what_they_are(small_trained_run, tmp_path):
    folder = str(tmp_path / 'in')
    os.makedirs(folder)
    frames = _road_frames(3, (32, 48))
    movie = _write_video(os.path.join(folder, 'movie.mp4'), frames, codec='libx264', pixel_format='yuv420p')
    os.rename(movie, os.path.join(folder, 'movie.png'))
    iio.imwrite(os.path.join(folder, 'picture.mp4'), frames[0], extension='.png')
    out = str(tmp_path / 'out')
    stdout, exit_value = run_main(['infer', '--model', small_trained_run, folder, '--out', out])
    assert exit_value is None, stdout
    assert 'infer: 1 of 1 images and 1 of 1 videos written' in stdout, stdout
    assert 'movie.png is a video by its content (its name says image): read as a video' in stdout, stdout
    assert 'picture.mp4 is an image by its content (its name says video): read as an image' in stdout, stdout
    assert sorted(os.listdir(out)) == ['movie_overlay.mp4', 'picture_overlay.png']
    assert len(_read_video(os.path.join(out, 'movie_overlay.mp4'))[0]) == 3
    assert iio.imread(os.path.join(out, 'picture_overlay.png')).shape == (32, 48, 3)
