"""Video in and out through FFmpeg (PyAV): files, capture devices, stream URLs and named pipes
in; H.264 in MP4 (or another codec and container) out, with the sound and subtitles kept.

One job per module:

- reader.py     `VideoSource`: demux and decode, live inputs, damage reported
- writer.py     `VideoSink`: encode and mux, NVENC or CPU, staged file renamed into place
- carry.py      the audio and subtitle streams riding along with the frames, copied or converted
- formats.py    the tables: containers, codecs, presets, colour matrices; `VideoInfo`,
                `VideoOutputConfig`
- placement.py  where outputs go: `video_output_path`, the read-only fallback, live inputs
- _ffmpeg.py    PyAV imported once with FFmpeg's log tamed; its errors and rationals

Every name is re-exported here, so `from cyclemask.engine.video import X` is the one import
other code needs. Importing this package does not import PyAV (the CLI starts without FFmpeg).
"""

from .formats import (CODEC_LABELS, CODECS, CONTAINERS, CRF_RANGE, DEFAULT_CRF, DEFAULT_PRESET, PRESETS,
                      VIDEO_INPUT_SUFFIXES, VIDEO_SUFFIXES, VideoInfo, VideoOutputConfig)
from .placement import (URL_SCHEMES, default_video_out, input_name, input_place, is_live, is_url, list_videos,
                        output_folder_near, translated_video_name, video_output_path, writable_place)
from .reader import VideoSource
from .writer import VideoSink

__all__ = [
    "CODEC_LABELS", "CODECS", "CONTAINERS", "CRF_RANGE", "DEFAULT_CRF", "DEFAULT_PRESET", "PRESETS",
    "URL_SCHEMES", "VIDEO_INPUT_SUFFIXES", "VIDEO_SUFFIXES", "VideoInfo", "VideoOutputConfig", "VideoSink",
    "VideoSource", "default_video_out", "input_name", "input_place", "is_live", "is_url", "list_videos",
    "output_folder_near", "translated_video_name", "video_output_path", "writable_place",
]
