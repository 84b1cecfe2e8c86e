"""Which files under a folder are audio, and their track ids: one rule for embedding,
datasets and Spotify matching.

Dependency-free on purpose, so light tools (the Spotify CLI) share it without importing the
decoders in `audio`.
"""

import collections
from collections.abc import Sequence
from pathlib import Path

# Extensions libsndfile decodes itself; anything else goes through librosa/audioread.
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"}
)
# Every extension treated as audio: the rest need audioread/ffmpeg (AudioError without it).
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | {".m4a", ".mp4", ".aac", ".wma"}


def visible_files(root: Path) -> list[Path]:
    """Every file under root, sorted, except hidden ones (a name in its path starts with ".":
    macOS `._Song.mp3` resource forks, `.DS_Store`, `.git/`)."""
    return sorted(
        path
        for path in root.rglob("*")
        if not any(part.startswith(".") for part in path.relative_to(root).parts) and path.is_file()
    )


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def track_ids(root: Path, files: Sequence[Path]) -> list[str]:
    """The track id of each file under root: its relative path with "/" and without its
    extension ("Artist/Album/01 Song"), except where two files differ only in extension,
    which keep it."""
    relative = [path.relative_to(root) for path in files]
    stems = collections.Counter(path.with_suffix("").as_posix() for path in relative)
    return [
        path.with_suffix("").as_posix()
        if stems[path.with_suffix("").as_posix()] == 1
        else path.as_posix()
        for path in relative
    ]
