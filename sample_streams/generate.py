"""Write the sample clips, their ground truth and the stand-in blocklist.

    python sample_streams/generate.py [--out sample_streams]

Each clip is 720p30 H.264 (libx264, yuv420p BT.709 limited range, CRF 26, a
keyframe every 2 s, 2 B-frames, as OBS-style live encoders send) plus a quiet
440 Hz AAC tone, and gets ``NAME.truth.json`` listing exactly which frames show
a "blocked" stand-in image.  Everything is seeded, so reruns give the same
pixels (and, with the same FFmpeg/x264 build, the same bytes).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pdqhash

sys.path.insert(
    0, str(Path(__file__).resolve().parent.parent)
)  # the checkout: sample_streams.synthetic, and livesafe uninstalled

from livesafe import samples
from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb
from sample_streams import synthetic as syn

HERE = Path(__file__).resolve().parent
FPS = syn.FPS
GOP = 2 * FPS
CRF = 26
AUDIO_RATE = 48_000
AUDIO_CHUNK = 1024  # samples per AAC frame
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.1  # -20 dBFS: clearly present, not loud


@dataclass(frozen=True)
class Part:
    """A run of frames; ``image``/``transform`` are set when it shows a blocked stand-in."""

    frames: int
    render: Callable[[int], np.ndarray]  # index within the part -> RGB frame
    label: str
    image: str | None = None
    transform: str | None = None


def benign(scene: str, frames: int, seed: int, start: int = 0) -> Part:
    """A benign scene; ``start`` continues an earlier part with the same seed after a cut."""
    source = syn.BENIGN_SCENES[scene](np.random.default_rng(seed))
    return Part(frames, lambda j: source(start + j), f"benign:{scene}")


def _still(picture: np.ndarray, transform: str, seed: int, noise: float) -> Callable[[int], np.ndarray]:
    """``picture`` under a transform, held still; ``noise`` adds fresh sensor noise per frame."""
    frame = syn.TRANSFORMS[transform](picture, np.random.default_rng(seed))
    if noise:
        return lambda j: syn.add_sensor_noise(frame, np.random.default_rng([seed, j]), noise)
    return lambda j: frame


def blocked(image: str, transform: str, frames: int, seed: int, noise: float = 0.0) -> Part:
    """A blocked stand-in under a transform, held still."""
    render = _still(syn.blocked_images()[image], transform, seed, noise)
    return Part(frames, render, f"blocked:{image}/{transform}", image, transform)


def blocked_pip_over(image: str, scene: str, frames: int, seed: int) -> Part:
    """A blocked stand-in in a fixed PiP window over a moving benign scene."""
    source = syn.BENIGN_SCENES[scene](np.random.default_rng(seed))
    picture = syn.blocked_images()[image]
    render = lambda j: syn.picture_in_picture(picture, np.random.default_rng(seed), background=source(j))  # noqa: E731
    return Part(frames, render, f"blocked:{image}/pip over {scene}", image, "pip")


def blocked_split_with(image: str, scene: str, frames: int, seed: int) -> Part:
    """A blocked stand-in in one pane of a split screen whose other pane is a moving benign scene."""
    source = syn.BENIGN_SCENES[scene](np.random.default_rng(seed))
    picture = syn.blocked_images()[image]
    render = lambda j: syn.split_screen(picture, np.random.default_rng(seed), other=source(j))  # noqa: E731
    return Part(frames, render, f"blocked:{image}/partial with {scene}", image, "partial")


def decoy(image: str, transform: str, frames: int, seed: int, noise: float = 0.0) -> Part:
    """A benign photo under a transform: same layout as a blocked case, must not match."""
    return Part(frames, _still(syn.benign_images()[image], transform, seed, noise), f"decoy:{image}/{transform}")


def clips() -> dict[str, list[Part]]:
    """The clips, each a timeline of parts (durations in frames at 30 fps)."""
    return {
        "benign_mix": [
            benign("slate", 24, 101),
            benign("procedural", 36, 102),
            benign("ken_burns", 36, 103),
            benign("fast_cuts", 36, 104),
            benign("black", 15, 105),
            benign("talking_head", 36, 106),
            benign("screen_share", 33, 107),
            decoy("astronaut", "letterbox", 12, 108),
            decoy("coins", "pip", 12, 109),
        ],
        "blocked_cut": [
            benign("talking_head", 75, 201),
            blocked("chelsea", "fullframe", 45, 202),
            benign("talking_head", 60, 201, start=120),
        ],
        "blocked_letterbox_pip": [
            benign("procedural", 30, 301),
            blocked("coffee", "letterbox", 45, 302),
            benign("procedural", 15, 301, start=75),
            blocked_pip_over("rocket", "procedural", 75, 303),
            benign("ken_burns", 15, 304),
            blocked_pip_over("chelsea", "ken_burns", 30, 305),
            benign("ken_burns", 15, 304, start=45),
        ],
        "blocked_transforms": [
            benign("ken_burns", 15, 401),
            blocked("coffee", "pillarbox", 24, 402),
            blocked("chelsea", "mirror", 24, 403),
            benign("procedural", 9, 404),
            blocked("rocket", "rot90", 24, 405),
            blocked("chelsea", "rot180", 24, 406),
            blocked("coffee", "rot270", 24, 407),
            benign("procedural", 9, 404, start=9),
            blocked("rocket", "crop_zoom", 24, 408),
            blocked("chelsea", "rotate_small", 24, 409),
            benign("ken_burns", 15, 401, start=15),
        ],
        "blocked_degraded": [
            benign("screen_share", 15, 501),
            blocked_split_with("chelsea", "talking_head", 30, 502),
            blocked("coffee", "overlay_text", 30, 503),
            benign("screen_share", 12, 501, start=15),
            blocked("rocket", "brightness_contrast", 30, 504),
            blocked("chelsea", "greyscale", 30, 505),
            benign("fast_cuts", 12, 506),
            blocked("coffee", "low_res", 30, 507),
            benign("fast_cuts", 15, 506, start=12),
        ],
        "blocked_screen": [
            benign("talking_head", 45, 601),
            blocked("chelsea", "screen_camera", 75, 602, noise=2.0),
            decoy("hubble_deep_field", "screen_camera", 45, 603, noise=2.0),
            benign("black", 15, 604),
        ],
    }


def _tone(samples: int) -> np.ndarray:
    """Mono float32 sine with 10 ms fades, so audio presence and sync are easy to check."""
    t = np.arange(samples, dtype=np.float64) / AUDIO_RATE
    wave = TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)
    fade = min(samples // 2, AUDIO_RATE // 100)
    ramp = np.linspace(0.0, 1.0, fade)
    wave[:fade] *= ramp
    wave[samples - fade :] *= ramp[::-1]
    return wave.astype(np.float32)


def encode(path: Path, parts: list[Part]) -> int:
    """Encode the parts to ``path``; returns the frame count."""
    total = sum(p.frames for p in parts)
    audio = _tone(total * AUDIO_RATE // FPS)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        out.metadata["comment"] = "livesafe synthetic sample; blocked content is benign scikit-image stand-ins"
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = syn.WIDTH, syn.HEIGHT, "yuv420p"
        video.time_base = Fraction(1, FPS)
        # A fixed thread count keeps x264's output reproducible across machines.
        video.options = {
            "crf": str(CRF),
            "preset": "medium",
            "threads": "4",
            "x264-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=2",
        }
        ctx = video.codec_context
        ctx.colorspace, ctx.color_range, ctx.color_primaries, ctx.color_trc = 1, 1, 1, 1  # BT.709, limited
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.bit_rate = 64_000
        sent = 0
        index = 0
        for part in parts:
            for j in range(part.frames):
                rgb = part.render(j)
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                    format="yuv420p",
                    dst_colorspace="ITU709",
                    dst_color_range="MPEG",
                    dst_color_trc=1,
                    dst_color_primaries=1,
                )
                frame.pts = index
                out.mux(video.encode(frame))
                index += 1
                due = min(audio.size, index * AUDIO_RATE // FPS)
                while sent < due and (due - sent >= AUDIO_CHUNK or due == audio.size):
                    chunk = audio[sent : sent + AUDIO_CHUNK]
                    aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                    aframe.sample_rate, aframe.pts, aframe.time_base = AUDIO_RATE, sent, Fraction(1, AUDIO_RATE)
                    out.mux(sound.encode(aframe))
                    sent += chunk.size
        out.mux(video.encode(None))
        out.mux(sound.encode(None))
    return total


def truth(parts: list[Part], frames: int) -> dict:
    """Ground truth: frame indices (0-based, in decoded output order, independent of pts) of blocked content."""
    segments, timeline, start = [], [], 0
    for part in parts:
        end = start + part.frames - 1
        timeline.append({"start": start, "end": end, "content": part.label})
        if part.image is not None:
            segments.append(
                {
                    "start": start,
                    "end": end,
                    "image": part.image,
                    "transform": part.transform,
                    "start_s": round(start / FPS, 4),
                    "end_s": round((end + 1) / FPS, 4),
                }
            )
        start = end + 1
    return {
        "fps": FPS,
        "frames": frames,
        "width": syn.WIDTH,
        "height": syn.HEIGHT,
        "frame_index": "0-based position in decoded output order; end is inclusive; *_s = index / fps",
        "audio": {"codec": "aac", "sample_rate": AUDIO_RATE, "channels": 1, "tone_hz": TONE_HZ},
        "segments": segments,
        "timeline": timeline,
    }


def pdq_hex(rgb: np.ndarray) -> str:
    """PDQ of an RGB image the way python-threatexchange computes it, checked against livesafe's own."""
    bits, _quality = pdqhash.compute(rgb)
    reference = f"{int(''.join(str(int(b)) for b in bits), 2):064x}"
    pdq = SIGNALS["pdq"]
    ours = pdq.format_hex(pdq.hash_luma(luma_from_rgb(rgb)).variants[0])
    if ours != reference:
        raise RuntimeError(f"livesafe PDQ {ours} disagrees with pdqhash {reference}")
    return reference


def write_blocklists(out: Path) -> None:
    hashes = {name: pdq_hex(np.asarray(image)) for name, image in syn.blocked_images().items()}
    header = [
        "# livesafe sample blocklist, written by sample_streams/generate.py.",
        "# PDQ hashes of BENIGN stand-in photos from scikit-image (a cat, a coffee cup, a rocket",
        "# launch); they play the part of blocked images in the sample clips.",
        f"# Order: {', '.join(hashes)}.",
    ]
    (out / "blocklist.txt").write_text("\n".join(header + [f"pdq {h}" for h in hashes.values()]) + "\n")
    with (out / "blocklist.csv").open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["signal_type", "signal_str", "name", "category"])
        writer.writerows(["pdq", h, name, "test_stand_in"] for name, h in hashes.items())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    write_blocklists(args.out)
    for name, parts in clips().items():
        frames = encode(args.out / f"{name}.mp4", parts)
        (args.out / f"{name}.truth.json").write_text(json.dumps(truth(parts, frames), indent=1) + "\n")
        print(f"{name}.mp4: {frames} frames ({frames / FPS:.1f} s)")
    if args.out.resolve() == HERE:  # the package's copies for livesafe demo stay the same bytes as these
        for name in (samples.CLIP, samples.BLOCKLIST):
            shutil.copyfile(HERE / name, Path(samples.__file__).parent / name)


if __name__ == "__main__":
    main()
