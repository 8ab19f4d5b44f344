"""Face-aware processing: find the faces in a frame, translate each, paste the results back.

`FaceProcessor` is a `FrameProcessor` (see processing.py): `prepare` detects faces (YuNet, via
`cyclemask.face_detect.FaceDetector`), skips faces smaller than `min_face`, follows faces from frame
to frame (`FaceTracker`), and cuts each face out with the square-with-margin framing that
`cyclemask-data prepare` used for the training crops (`square_crop_box`, here with fit="pad" so
a face at the frame's edge keeps the same framing). The pipeline batches the crops of many
frames together; `finish` resizes each translated crop back to its box and blends it in with a
weight that is exactly 0 outside what it pastes, so those pixels keep their values bit for bit.
By default (paste="zone") the weight is the face's mask zone (`cyclemask.face_detect.mask_zone_matte`:
nose bridge to under the chin, cheek to cheek, from the five landmarks), and the generator's
colour drift around the zone is removed first (`zone_colour_offset`), so only nose, mouth and
chin come from the model and they meet the frame without a halo; paste="crop" blends the whole
crop with a feathered edge that is 0 on the crop's border. A frame without faces is returned as
it came.

Tracking (videos): detections are associated with tracks by IoU; a track's box (and its
landmarks, with the same weight, so the zone moves with the crop) is an
exponential moving average whose weight on the new detection grows with the distance from the
smoothed box (a jitter of a few pixels is smoothed away, a real head movement is followed at
once); a track (seen in at least two frames) that the detector misses for up to `hold_frames`
frames is still translated at its predicted box (a mask that blinks off for one frame is far more visible than a box a few pixels
off); tracks are reset on a scene cut or a change of frame size. The tracker is in tracking.py.

Colour matching (optional, the paper's third limitation: "the model would apply a mask of the
same luminosity in both correctly exposed and underexposed images"): a crop darker than a
well-exposed face is brightened by a gain in linear light before translation, and the result is
darkened by the same gain, so whatever the generator paints takes the frame's exposure; then the
generator's colour drift is removed by matching the median LAB colour of the crop's outer ring
(background and hair, which the model should leave alone) to the original's (colour_match.py).

Threads: `prepare` runs on the pipeline's decode thread and `finish` on its writer thread. The
tracker is the one piece of state kept across frames; only `prepare` touches it, and the
pipeline calls `prepare` once per frame, in frame order, from one thread. Detection can run
ahead of `prepare` on a small thread pool (`detect_ahead`, engine/detect_ahead.py): detection is
stateless, so frames can be detected in parallel while tracking stays in order; each frame
brings its own detections to `prepare` (`Frame.ahead`).
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from cyclemask.errors import ConfigError
from cyclemask.face_detect import (
    ZONE_FEATHER,
    ZONE_GROW,
    Face,
    FaceDetector,
    box_iou,
    crop_square,
    eye_mouth_distance,
    mask_zone_matte,
    resize_square,
    square_crop_box,
)
from cyclemask.image_arrays import resize
from cyclemask.mask_templates import LUMA, is_grey
from cyclemask.upright import RollState, follow_roll

# Colour matching and tracking live in modules of their own; their names stay importable from here.
from .colour_match import _ring, apply_gain, exposure_gain, mean_luminance, ring_lab, shift_lab  # noqa: F401
from .detect_ahead import DetectAheadSource
from .face_checks import plausible, worn
from .processing import FrameProcessor
from .tracking import FaceTracker, _landmarks, _usable_landmarks
from .zone_paste import changed_matte, zone_colour_offset  # noqa: F401  (importable from here)

log = logging.getLogger(__name__)

BLEND_SHAPES = ("ellipse", "rect")
PASTE_MODES = ("zone", "crop", "hole", "hole-below-eyes")
#: "hole-below-eyes": the mask zone grown by this much (units of the eye-to-mouth distance, as
#: ZONE_GROW) bounds the hole at the sides and below, where a real mask reaches past the zone
#: (a cloth mask's sides, under the chin); its top stays the zone's, below the eyes.
HOLE_ZONE_GROW = 1.5
HOLE_PASTES = ("hole", "hole-below-eyes")  # for erase-then-restore graphs: the pixels they changed
ZONE_COLOUR_MODES = ("field", "mean", "none")
ROTATED_MODES = ("full", "lost", "off")

Box = tuple[float, float, float, float]  # (x, y, w, h), as YuNet reports a face


@dataclass(frozen=True)
class FaceConfig:
    """How faces are found, followed, cut out and pasted back (see the module docstring).

    min_face: faces whose box has a shorter side below this (frame pixels) are left as they are.
    margin: the crop is the face box's long side grown by margin x that side on each side; use
        the margin the training crops were prepared with (`cyclemask-data prepare --margin`).
    detect_side: frames with a longer side are downscaled to it for detection (boxes are mapped
        back); YuNet was trained at 640 x 640.
    score_threshold: YuNet's confidence needed to count a face. Masked faces score lower than
        bare ones: 0.5 finds more of them than 0.6 with no more false faces on the shared
        pairs and clips (benchmarks/detect_recall.py measures it).
    detect_retry: detect again on a padded copy when nothing is found (for tight face crops in
        photo folders; it costs a second, larger detection on every frame without faces).
    smoothing: 0 follows every detection exactly; otherwise box and landmarks go through a
        One-Euro filter (engine/tracking.py): min_cutoff (cycles per frame) is its cutoff for a
        still face, beta how fast the cutoff rises with the face's speed (face sizes per frame,
        itself low-passed at d_cutoff). Tuned on benchmarks/zone_jitter.py.
    snap: a detection this far from the smoothed box (as a fraction of the face size) is
        followed at once.
    face_checks: drop detections whose landmarks no real face has (engine/face_checks.py) and
        translate a new track only once it is confirmed by confirm_hits detections within
        confirm_window frames (videos); detections running ahead (detect-ahead) confirm it on
        its first frame, so a real face loses no frame. False: every detection is translated at
        once, as before these checks.
    hold_frames: frames a track is kept, and translated, after the detector lost it.
    upright: look again, on a crop turned upright, at a face whose roll is large or whose eye
        line disagrees with its mouth and axis (`cyclemask.upright`): YuNet's eyes stay level
        on a rolled head, and the zone's top would then cross the lower eye. A tracked face is
        decided with hysteresis on its low-passed roll and its landmarks blend from one look
        to the other over a few frames (`RollState`), so the tracker's filter sees no jump.
    rotated: extra detection passes on copies rotated by `rotations` degrees, for tilted heads
        (YuNet misses heads tilted past ~20 degrees, masked ones sooner): "full" over the whole
        frame, every frame (about 3x the detection time); "lost" only around a tracked face
        the upright pass lost (videos: cheap, as the region is small); "off".
    scene_cut: mean absolute difference (0..1) between 32 x 32 thumbnails of consecutive
        frames above which every track is dropped (within the shared clips: at most 0.012;
        between them: 0.10-0.24; a false cut only costs one frame of smoothing).
    paste: "zone" (default) blends the generator's output into the mask zone only (a soft
        matte from the landmarks, `cyclemask.face_detect.mask_zone_matte`), colour-matched to the
        frame around it; everything else keeps its own pixels. "crop" blends the whole crop
        with the feathered `blend_shape`. A face without usable landmarks is pasted as a crop.
        "hole" is for erase-then-restore graphs, which change only the pixels of the hole their
        segmenter found and leave every other pixel as it came: the weight is where the output
        differs from the crop that went in (`changed_matte`), so only the mask's own pixels are
        replaced, whatever its shape, and a face without a mask keeps every pixel.
        "hole-below-eyes" is that hole cut off where the mask zone's top is, below the eyes
        (and at HOLE_ZONE_GROW past the zone's outline at the sides and below, far enough for a
        cloth mask's sides): what the segmenter takes for mask around the eyes (the lower rim
        of glasses, a shadow) keeps its pixels.
    zone_grow, zone_feather: the zone's growth past the anchors' outline and its soft edge,
        in units of the eye-to-mouth distance (see `cyclemask.face_detect.ZONE_GROW`).
    zone_colour: in zone mode, remove the generator's colour drift measured in a band just
        outside the zone, so the pasted zone meets the frame without a halo: "field" as a
        low-frequency offset that follows the band (see `zone_colour_offset`), "mean" as one
        offset per channel, "none" not at all.
    feather: paste="crop": the fraction of the crop's half-side over which the paste-back
        weight falls from 1 to 0 at the crop's border.
    exposure_target: mean linear luminance (0..1) a darker crop is brought to before
        translation when colour matching: the median of face crops in the shared training data
        (their 10th-90th percentiles: 0.15-0.46); max_gain caps the brightening.
    """

    min_face: int = 32
    margin: float = 0.3
    track: bool = True
    color_match: bool = False
    detect_side: int = 640
    score_threshold: float = 0.5
    detect_retry: bool = False
    smoothing: float = 0.7
    min_cutoff: float = 0.02
    beta: float = 15.0
    d_cutoff: float = 0.03
    snap: float = 0.25
    face_checks: bool = True
    confirm_hits: int = 2
    confirm_window: int = 3
    iou_threshold: float = 0.3
    hold_frames: int = 2
    upright: bool = True
    rotated: str = "lost"
    rotations: tuple[float, ...] = (25.0, -25.0)
    scene_cut: float = 0.08
    paste: str = "zone"
    zone_grow: float = ZONE_GROW
    zone_feather: float = ZONE_FEATHER
    zone_colour: str = "field"
    feather: float = 0.3
    blend_shape: str = "ellipse"
    exposure_target: float = 0.3
    max_gain: float = 8.0

    def __post_init__(self) -> None:
        for name in ("min_face", "detect_side"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer; got {v!r}")
        if self.detect_side < 32:
            raise ConfigError(f"detect_side must be at least 32; got {self.detect_side!r}")
        if not isinstance(self.hold_frames, int) or self.hold_frames < 0:
            raise ConfigError(f"hold_frames must be an integer >= 0; got {self.hold_frames!r}")
        if not 0.0 <= self.margin <= 2.0:
            raise ConfigError(f"margin must be in [0, 2]; got {self.margin!r}")
        for name in ("score_threshold", "iou_threshold"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in (0, 1); got {getattr(self, name)!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ConfigError(f"smoothing must be in [0, 1); got {self.smoothing!r}")
        if not (self.min_cutoff > 0 and self.beta >= 0 and self.d_cutoff > 0):
            raise ConfigError("min_cutoff and d_cutoff must be > 0 and beta >= 0; got "
                              f"{self.min_cutoff!r}, {self.d_cutoff!r}, {self.beta!r}")
        if not (isinstance(self.confirm_hits, int) and isinstance(self.confirm_window, int)
                and 1 <= self.confirm_hits <= self.confirm_window <= 4):
            raise ConfigError("confirm_hits and confirm_window must be integers with 1 <= hits <= window <= 4; "
                              f"got {self.confirm_hits!r}, {self.confirm_window!r}")
        if not self.snap > 0:
            raise ConfigError(f"snap must be > 0; got {self.snap!r}")
        if not 0.0 < self.scene_cut <= 1.0:
            raise ConfigError(f"scene_cut must be in (0, 1]; got {self.scene_cut!r}")
        if not 0.0 < self.feather <= 1.0:
            raise ConfigError(f"feather must be in (0, 1]; got {self.feather!r}")
        if self.rotated not in ROTATED_MODES:
            raise ConfigError(f"rotated must be one of {', '.join(ROTATED_MODES)}; got {self.rotated!r}")
        if not self.rotations or any(not -90.0 <= a <= 90.0 or a == 0 for a in self.rotations):
            raise ConfigError(f"rotations must be non-zero angles in [-90, 90] degrees; got {self.rotations!r}")
        if self.paste not in PASTE_MODES:
            raise ConfigError(f"paste must be one of {', '.join(PASTE_MODES)}; got {self.paste!r}")
        if not 0.0 <= self.zone_grow <= 2.0:
            raise ConfigError(f"zone_grow must be in [0, 2]; got {self.zone_grow!r}")
        if not 0.0 < self.zone_feather <= self.zone_grow + 1.0:
            raise ConfigError(f"zone_feather must be in (0, zone_grow + 1]; got {self.zone_feather!r}")
        if self.zone_colour not in ZONE_COLOUR_MODES:
            raise ConfigError(f"zone_colour must be one of {', '.join(ZONE_COLOUR_MODES)}; got {self.zone_colour!r}")
        if self.blend_shape not in BLEND_SHAPES:
            raise ConfigError(f"blend_shape must be one of {', '.join(BLEND_SHAPES)}; got {self.blend_shape!r}")
        if not 0.0 < self.exposure_target < 1.0:
            raise ConfigError(f"exposure_target must be in (0, 1); got {self.exposure_target!r}")
        if not self.max_gain >= 1.0:
            raise ConfigError(f"max_gain must be >= 1; got {self.max_gain!r}")


@dataclass
class FaceStats:
    """Counts for the summary and stage times (seconds, summed) for the benchmark."""

    frames: int = 0  # frames prepared
    frames_with_faces: int = 0  # frames that gave at least one crop
    found: int = 0  # detections at or above min_face
    too_small: int = 0  # detections below min_face (left as they are)
    implausible: int = 0  # detections whose landmarks no face has (left as they are)
    worn: int = 0  # detections on the chest of a larger face: prints on clothing (left as they are)
    unconfirmed: int = 0  # detections of new tracks never confirmed in time (left as they are)
    held: int = 0  # crops of tracks the detector missed in that frame
    recovered: int = 0  # faces the upright pass lost, found again by rotated passes around their track
    upright: int = 0  # rolled faces looked at again on a crop turned upright
    whole_crop: int = 0  # zone mode: faces pasted as whole crops (no usable landmarks)
    crops: int = 0  # crops handed to the model
    translated: int = 0  # crops pasted back into a frame
    scene_cuts: int = 0
    detect_s: float = 0.0  # detector busy time (on whichever thread ran it)
    detect_wait_s: float = 0.0  # time `prepare` waited for a detection running ahead
    crop_s: float = 0.0  # tracking, cropping, resizing, exposure (decode thread)
    paste_s: float = 0.0  # colour restore, resize back, blend (writer thread)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_detect_time(self, seconds: float) -> None:
        with self._lock:  # detection may run on several threads at once
            self.detect_s += seconds

    def summary(self, min_face: int) -> str:
        held = f", {self.held} of them held by tracking" if self.held else ""
        held += f"; {self.recovered} found again on rotated copies" if self.recovered else ""
        held += f"; {self.upright} rolled, looked at again upright" if self.upright else ""
        small = f"; {self.too_small} under --min-face {min_face} px left as they were" if self.too_small else ""
        whole = f"; {self.whole_crop} pasted as whole crops (no usable landmarks)" if self.whole_crop else ""
        small += f"; {self.implausible} with implausible landmarks left as they were" if self.implausible else ""
        small += (f"; {self.worn} on another face's clothing (a print, below a larger face) left as they were"
                  if self.worn else "")
        small += (f"; {self.unconfirmed} of new faces not yet confirmed by a second frame left as they were"
                  if self.unconfirmed else "")
        return (f"{self.found} found in {self.frames_with_faces} of {self.frames} frames{small}; "
                f"{self.translated} translated{held}{whole}")


# -------------------------------------------------------------------------------------------
# Geometry helpers


iou = box_iou


def feather_mask(side: int, shape: str = "ellipse", feather: float = 0.3) -> np.ndarray:
    """Paste-back weights [side, side, 1] float32: 1 in the middle, a smoothstep fall to 0
    that reaches exactly 0 at the inscribed circle ("ellipse") or square's edge ("rect").

    The weights are exact zeros wherever they are zero, so blending leaves those pixels as they
    were; the smoothstep has no kink where it meets 1 or 0, which is what would show as a seam.
    """
    # Tracked boxes change size by a pixel now and then: cache the common sizes, but not the
    # few very large ones (a 2000 px face's mask is 16 MB).
    return _feather_mask_cached(side, shape, feather) if side <= 512 else _feather_mask(side, shape, feather)


@functools.lru_cache(maxsize=48)
def _feather_mask_cached(side: int, shape: str, feather: float) -> np.ndarray:
    return _feather_mask(side, shape, feather)


def _feather_mask(side: int, shape: str, feather: float) -> np.ndarray:
    if shape not in BLEND_SHAPES:
        raise ConfigError(f"blend shape must be one of {', '.join(BLEND_SHAPES)}; got {shape!r}")
    # The outermost pixel centres sit at -1 and 1, so the crop's border pixels get weight 0 and
    # the weight is continuous with the untouched frame around the crop.
    t = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    x, y = np.meshgrid(t, t)
    r = np.sqrt(x * x + y * y) if shape == "ellipse" else np.maximum(np.abs(x), np.abs(y))
    u = np.clip((1.0 - r) / feather, 0.0, 1.0)
    w = u * u * (3.0 - 2.0 * u)
    w.setflags(write=False)
    return w[:, :, None]


# -------------------------------------------------------------------------------------------
# The processor


@dataclass(frozen=True)
class _Paste:
    box: tuple[int, int, int, int]  # square crop box in frame pixels (may reach past the edge)
    gain: float = 1.0  # exposure gain applied before translation
    ring: np.ndarray | None = None  # median LAB of the original crop's ring (colour matching)
    landmarks: np.ndarray | None = None  # zone paste: [5, 2] in frame pixels; None: whole crop
    source: np.ndarray | None = None  # zone colour: the crop as cut, at model size, before any gain
    face: Box | None = None  # the (tracked) face box the crop was cut around


class _FacesAhead(Sequence):
    """Each following frame's usable faces, waited for on first access; None for one not known
    (cancelled, failed, or no image): it confirms nothing."""

    def __init__(self, futures, usable: Callable[[list[Face]], list[Face]]) -> None:
        self._futures, self._usable = list(futures), usable
        self._got: dict[int, list[Face] | None] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def __getitem__(self, k):
        if k not in self._got:
            future = self._futures[k]
            try:
                self._got[k] = None if future is None else self._usable(future.result())
            except Exception:  # its own frame reports it; here it only confirms nothing
                self._got[k] = None
        return self._got[k]


class FaceProcessor(FrameProcessor):
    """Detect, track, crop, and blend back (see the module docstring).

    detector_factory builds a detector (an object with `detect(image_rgb) -> list[Face]`); it
    is called once here (so a bad model file fails before any frame is read) and once per
    thread that detects. Default: YuNet from `model_path`, else $CYCLEMASK_FACE_DETECTOR.
    one_detector: every thread uses the detector made here, for a caller that runs many short
    pipelines (each on new threads) and never detects on two threads at once: no detect-ahead
    workers, one run at a time.
    """

    def __init__(self, size: int, config: FaceConfig | None = None, *, model_path: str | os.PathLike | None = None,
                 detector_factory: Callable[[], Any] | None = None, one_detector: bool = False) -> None:
        super().__init__(size)
        self.config = c = config or FaceConfig()
        if detector_factory is None:
            def detector_factory():
                return FaceDetector(model_path, score_threshold=c.score_threshold,
                                    retry_pad=0.5 if c.detect_retry else 0.0, max_side=c.detect_side,
                                    # only reached with --detect-side above 800
                                    coarse_side=640 if c.detect_retry else None,
                                    rotations=c.rotations if c.rotated == "full" else ())
        self._local = threading.local()
        self._local.detector = detector_factory()
        if one_detector:
            first = self._local.detector
            detector_factory = lambda: first  # noqa: E731
        self._factory = detector_factory
        self.tracker = FaceTracker(c) if c.track else None
        self.stats = FaceStats()

    # -- detection ----------------------------------------------------------------------------
    def _detector(self):
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = self._factory()
        return det

    def detect(self, image: np.ndarray) -> list[Face]:
        """Detections in image, on the calling thread's own detector; counts detector time."""
        det = self._detector()
        t0 = time.perf_counter()
        try:
            return list(det.detect(image))
        finally:
            self.stats.add_detect_time(time.perf_counter() - t0)

    def _recover(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """Faces found again by rotated passes around the tracks this frame's faces lost."""
        c = self.config
        det = self._detector()
        if not hasattr(det, "detect_near"):
            return []
        found: list[Face] = []
        t0 = time.perf_counter()
        try:
            for box in self.tracker.lost(faces):
                # Only a face the lost track will take up (IoU as the tracker associates): any
                # other would start a second track beside the held one, two crops of one face.
                near = [f for f in self._usable(det.detect_near(image, box, c.rotations))
                        if iou(f.box, box) >= c.iou_threshold
                        and all(iou(f.box, g.box) <= 0.3 for g in faces + found)]
                if near:
                    found.append(near[0])
        finally:
            self.stats.add_detect_time(time.perf_counter() - t0)
        return found

    def detect_ahead(self, source, workers: int = 2, depth: int | None = None):
        """Wrap a source so frames are detected on `workers` threads ahead of `prepare`.

        Returns the source itself when workers is 0. The wrapper reads at most `depth`
        (default 2 x workers) frames ahead of the pipeline, so memory stays bounded.
        """
        if not isinstance(workers, int) or workers < 0:
            raise ConfigError(f"detection workers must be an integer >= 0; got {workers!r}")
        if workers == 0:
            return source
        return DetectAheadSource(source, self.detect, workers, depth or 2 * workers)

    def _usable(self, faces: list[Face]) -> list[Face]:
        """The faces worth translating: large enough and, with face checks, plausible and, in a
        followed video, not printed on another face's clothing (face_checks.worn). Photos are
        not judged by that rule: in a collage (a grid of photos) a face stands below a larger
        one just as a print does, and one photo has no motion to tell them apart; 3 collage
        faces of the shared photos would be lost (and one false face on a coat dropped;
        benchmarks/face_geometry.py), none in the clips."""
        c = self.config
        big = [f for f in faces if f.size >= c.min_face]
        if not c.face_checks:
            return big
        real = [f for f in big if plausible(f)]
        if not c.track:
            return real
        return [f for f, w in zip(real, worn(real)) if not w]

    def _faces_ahead(self, ahead: Any) -> "_FacesAhead":
        """The usable detections of the frames after this one that detect-ahead already runs
        (`Ahead.following`), fetched only when tracking asks for them (a new face to confirm):
        waiting on them every frame would keep the detection pool from running ahead."""
        return _FacesAhead(getattr(ahead, "following", ()), self._usable)

    def _faces_for(self, image: np.ndarray, ahead: Any) -> list[Face]:
        """The frame's detections: waited for when detect-ahead started them (`ahead`, a Future),
        else found here."""
        if ahead is None:
            return self.detect(image)
        t0 = time.perf_counter()
        try:
            faces = ahead.result()
        except concurrent.futures.CancelledError:  # the pool shut down before it ran
            return self.detect(image)
        self.stats.detect_wait_s += time.perf_counter() - t0
        return faces

    def _follow(self, image: np.ndarray, faces: list[Face], ahead: Any) -> list[tuple[Box, bool, np.ndarray | None]]:
        """The faces to translate in this frame, (box, held, landmarks or None) each: the usable
        detections, those found again around lost tracks, through the tracker; counted."""
        c, st = self.config, self.stats
        big = [f for f in faces if f.size >= c.min_face]
        usable = self._usable(big)
        st.found += len(usable)
        st.too_small += len(faces) - len(big)
        if c.face_checks:
            real = sum(plausible(f) for f in big)
            st.implausible += len(big) - real
            st.worn += real - len(usable)
        # The upright look (cyclemask.upright) runs here, on the calling thread, not with the
        # detection ahead: a tracked face's choice depends on its track's past frames.
        det = self._detector() if c.upright else None
        relook = det is not None and hasattr(det, "_detect_rotated")
        if self.tracker is None:
            if relook:
                t0 = time.perf_counter()
                usable, looked = follow_roll(det, image, usable)
                st.upright += looked
                st.add_detect_time(time.perf_counter() - t0)
            return [(f.box, False, _landmarks(f)) for f in usable]
        if c.rotated == "lost":
            recovered = self._recover(image, usable)
            st.recovered += len(recovered)
            usable = usable + recovered
        cuts, unconfirmed = self.tracker.cuts, self.tracker.unconfirmed
        def follow(face: Face, track) -> Face:
            if track.roll is None:
                track.roll = RollState()
            t0 = time.perf_counter()
            face, looked = track.roll.follow(det, image, face)
            st.upright += int(looked)
            st.add_detect_time(time.perf_counter() - t0)
            return face

        boxes = self.tracker.update(image, usable, self._faces_ahead(ahead) if c.face_checks else None,
                                    follow if relook else None)
        st.scene_cuts += self.tracker.cuts - cuts
        st.unconfirmed += self.tracker.unconfirmed - unconfirmed
        return boxes

    # -- FrameProcessor ---------------------------------------------------------------------
    def prepare(self, image: np.ndarray, ahead: Any = None) -> tuple[list[np.ndarray], Any]:
        c, st = self.config, self.stats
        faces = self._faces_for(image, ahead)
        t0 = time.perf_counter()
        st.frames += 1
        boxes = self._follow(image, faces, ahead)
        crops, pastes = [], []
        for face_box, held, landmarks in boxes:
            box = square_crop_box(face_box, image.shape, c.margin, fit="pad")
            crop = resize_square(crop_square(image, box), self.size)
            source = crop if c.paste == "zone" and c.zone_colour != "none" else None
            if c.paste not in ("zone", "hole-below-eyes") or not _usable_landmarks(landmarks):
                landmarks = None
            gain, ring = 1.0, None
            if c.color_match:
                ring = ring_lab(crop)
                gain = exposure_gain(crop, c.exposure_target, c.max_gain)
                crop = apply_gain(crop, gain)
            crop = np.ascontiguousarray(crop)
            crops.append(crop)
            if c.paste in HOLE_PASTES:
                source = crop  # what the graph was given: its output differs from it only in the hole
            elif landmarks is None:
                source = None
            pastes.append(_Paste(box, gain, ring, landmarks, source, tuple(face_box)))
            st.held += int(held)
            st.whole_crop += int(c.paste == "zone" and landmarks is None)
        st.crops += len(crops)
        st.frames_with_faces += int(bool(crops))
        st.crop_s += time.perf_counter() - t0
        return crops, pastes

    def finish(self, image: np.ndarray, state: Any, outputs: list[np.ndarray]) -> np.ndarray:
        if not outputs:
            return image  # no face: the frame as it came, byte for byte
        t0 = time.perf_counter()
        c = self.config
        out = image.copy()
        ih, iw = image.shape[:2]
        for paste, gen in zip(state, outputs, strict=True):
            hole = changed_matte(paste.source, gen) if c.paste in HOLE_PASTES else None
            if c.color_match:
                gen = self._restore_colour(gen, paste)
            x0, y0, x1, y1 = paste.box
            side = x1 - x0
            if hole is not None and not hole.any():
                continue  # nothing changed: the frame keeps this face's pixels bit for bit
            weight = self.paste_weight(paste, hole)
            if c.paste == "zone" and paste.landmarks is not None and paste.source is not None:
                gen = self._match_zone_colour(gen, paste, weight)
            weight = weight[:, :, None]
            ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x1, iw), min(y1, ih)
            if ax1 <= ax0 or ay1 <= ay0:
                continue
            if is_grey(image[ay0:ay1:4, ax0:ax1:4]):
                # A black-and-white photo: the generator's colours (a blue mask) would be the
                # only colour in it; keep their brightness only.
                gen = np.repeat(np.rint(gen.astype(np.float32) @ LUMA).clip(0, 255).astype(np.uint8), 3, axis=2)
            # Bilinear when enlarging: positive weights keep backend differences within 1 LSB.
            patch = resize(gen, side, "area" if side <= self.size else "linear")
            sy, sx = slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0)
            region = out[ay0:ay1, ax0:ax1].astype(np.float32)
            blended = region + weight[sy, sx] * (patch[sy, sx].astype(np.float32) - region)
            out[ay0:ay1, ax0:ax1] = np.rint(blended).astype(np.uint8)
        self.stats.translated += len(outputs)
        self.stats.paste_s += time.perf_counter() - t0
        return out

    def paste_weight(self, paste: _Paste, hole: np.ndarray | None = None) -> np.ndarray:
        """The weight [side, side] (float32, 0..1) `finish` gives the translated crop over its
        box: the hole the graph changed (paste="hole": `changed_matte` at model size, given;
        "hole-below-eyes": that hole within the grown zone, below the eyes), the mask zone's
        matte, or the feathered whole crop for a face without usable landmarks (or
        paste="crop")."""
        c = self.config
        side = paste.box[2] - paste.box[0]
        if hole is not None:
            hole = resize(hole, side, "area" if side <= self.size else "linear") if side != self.size else hole
            if paste.landmarks is not None:  # hole-below-eyes
                hole = hole * mask_zone_matte(paste.landmarks, paste.box, HOLE_ZONE_GROW, c.zone_feather)
            return hole
        # The zone; or, before a hole is known (a face's layout), the most that hole can take.
        if paste.landmarks is not None:
            grow = HOLE_ZONE_GROW if c.paste == "hole-below-eyes" else c.zone_grow
            return mask_zone_matte(paste.landmarks, paste.box, grow, c.zone_feather)
        if c.paste in HOLE_PASTES:
            bound = np.ones((side, side), np.float32)
            bound[0, :] = bound[-1, :] = bound[:, 0] = bound[:, -1] = 0.0
            return bound
        return feather_mask(paste.box[2] - paste.box[0], c.blend_shape, c.feather)[:, :, 0]

    def _match_zone_colour(self, gen: np.ndarray, paste: _Paste, matte: np.ndarray) -> np.ndarray:
        """gen with the drift measured around the zone removed (see zone_colour_offset)."""
        s = gen.shape[0]
        side = paste.box[2] - paste.box[0]
        small = resize(matte, s, "area") if side != s else matte
        h = eye_mouth_distance(paste.landmarks) * s / side
        offset = zone_colour_offset(paste.source, gen, small, h, field=self.config.zone_colour == "field")
        return np.clip(np.rint(gen.astype(np.float32) + offset), 0, 255).astype(np.uint8)

    @staticmethod
    def _restore_colour(gen: np.ndarray, paste: _Paste) -> np.ndarray:
        if paste.gain != 1.0:
            gen = apply_gain(gen, paste.gain, inverse=True)
        if paste.ring is not None:
            gen = shift_lab(gen, paste.ring - ring_lab(gen))
        return gen
