"""Local audio files matched to Spotify tracks: tags, name normalisation, matching.

Tags (artist, title, ISRC) come from libsndfile, FLAC Vorbis comments and MP3 ID3v2 frames,
else from a file name `[NN - ]Artist - Title.ext`. A Spotify track matches a file by ISRC,
else by normalised artist + title (case, accents, punctuation, feat. credits and
remaster/version notes ignored). No network and no spotipy here.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from myna_rpe_jax.data.formats import is_audio, track_ids, visible_files

_VERSION = r"(?:feat|ft|featuring|with|remaster|remastered|version|edit|mix|mono|stereo|live|"
_VERSION += r"deluxe|bonus|demo|explicit|radio)"
_BRACKET_NOTE = re.compile(rf"[(\[][^)\]]*\b{_VERSION}\b[^)\]]*[)\]]")
_DASH_NOTE = re.compile(rf"\s-\s[^-]*\b{_VERSION}\b.*$")
_FEAT = re.compile(r"\s(?:feat|ft|featuring)\b\.?.*$")
_ARTIST_SPLIT = re.compile(r"\s*(?:[,;/&]|\bfeat\b\.?|\bft\b\.?|\bfeaturing\b)\s*")


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in text if not unicodedata.combining(c))


def normalise(text: str) -> str:
    """Casefolded, accent-free text without feat./remaster notes or punctuation."""
    text = _FEAT.sub("", _DASH_NOTE.sub("", _BRACKET_NOTE.sub(" ", _fold(text))))
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.replace("&", " and ")).split())


def artist_keys(artists: Sequence[str]) -> set[str]:
    """Normalised forms of each artist, of all of them together, and of each one's first name."""
    keys = {normalise(a) for a in artists} | {normalise(", ".join(artists))}
    keys |= {normalise(_ARTIST_SPLIT.split(_fold(a))[0]) for a in artists}
    return keys - {""}


def _vorbis_comments(block: bytes) -> dict[str, str]:
    at, out = 4 + int.from_bytes(block[:4], "little"), {}
    for _ in range(int.from_bytes(block[at : at + 4], "little")):
        n = int.from_bytes(block[at + 4 : at + 8], "little")
        key, _, value = block[at + 8 : at + 8 + n].decode("utf-8", "replace").partition("=")
        out.setdefault(key.upper(), value)
        at += 4 + n
    return out


def _flac_comments(f) -> dict[str, str]:
    """Vorbis comments (upper-cased keys) of a FLAC file's VORBIS_COMMENT metadata block."""
    f.seek(0)
    if f.read(4) != b"fLaC":
        return {}
    while len(header := f.read(4)) == 4:
        size = int.from_bytes(header[1:], "big")
        if header[0] & 0x7F == 4:
            return _vorbis_comments(f.read(size))
        if header[0] & 0x80:  # last metadata block
            break
        f.seek(size, 1)
    return {}


def _syncsafe(b: bytes) -> int:
    return sum((x & 0x7F) << (7 * (len(b) - 1 - i)) for i, x in enumerate(b))


def _id3_frames(f) -> dict[str, str]:
    """Text frames (TSRC, TIT2, TPE1, ...) of an ID3v2.3/2.4 tag at the start of a file."""
    f.seek(0)
    header = f.read(10)
    if header[:3] != b"ID3" or header[3] not in (3, 4):
        return {}
    version, flags = header[3], header[5]
    tag = f.read(_syncsafe(header[6:10]))
    if flags & 0x80 and version == 3:  # unsynchronised tag
        tag = tag.replace(b"\xff\x00", b"\xff")
    frame_size = _syncsafe if version == 4 else lambda b: int.from_bytes(b, "big")
    pos = 0
    if flags & 0x40:  # extended header: v2.4 counts its size field, v2.3 does not
        pos = _syncsafe(tag[:4]) if version == 4 else 4 + int.from_bytes(tag[:4], "big")
    out = {}
    while pos + 10 <= len(tag) and tag[pos : pos + 4].strip(b"\0"):
        frame_id, size = tag[pos : pos + 4].decode("latin-1"), frame_size(tag[pos + 4 : pos + 8])
        body, pos = tag[pos + 10 : pos + 10 + size], pos + 10 + size
        if frame_id.startswith("T") and body:
            codec = {0: "latin-1", 1: "utf-16", 2: "utf-16-be", 3: "utf-8"}.get(body[0], "latin-1")
            out[frame_id] = body[1:].decode(codec, "replace").split("\0")[0].strip()
    return out


def read_tags(path: Path) -> dict[str, str]:
    """artist, title and isrc of an audio file: its tags, else 'Artist - Title' in its name."""
    tags = {"artist": "", "title": "", "isrc": ""}
    try:
        with sf.SoundFile(path) as f:
            tags.update({k: v for k, v in f.copy_metadata().items() if k in tags and v})
    except sf.LibsndfileError:
        pass  # formats libsndfile cannot open (m4a): tags from the name below
    with open(path, "rb") as f:
        comments, frames = _flac_comments(f), _id3_frames(f)
    tags["isrc"] = comments.get("ISRC") or frames.get("TSRC") or ""
    tags["artist"] = tags["artist"] or comments.get("ARTIST") or frames.get("TPE1", "")
    tags["title"] = tags["title"] or comments.get("TITLE") or frames.get("TIT2", "")
    if not (tags["artist"] and tags["title"]):
        stem = re.sub(r"^\d{1,3}[\s.\-_]+", "", path.stem)  # leading track number
        artist, sep, title = stem.partition(" - ")
        tags["artist"], tags["title"] = (artist, title) if sep else ("", stem)
    tags["isrc"] = re.sub(r"[^A-Z0-9]", "", tags["isrc"].upper())
    return tags


def scan_audio(audio_dir: Path) -> list[tuple[str, Path, dict]]:
    """(track_id, path, tags) of every audio file under audio_dir, sorted by path.

    The files and their track ids are exactly those `python -m myna_rpe_jax.embed` embeds
    (`data.formats`: audio extensions in any case, hidden files skipped, ids are relative
    paths without extension). Raises NotADirectoryError when audio_dir is not a folder.
    """
    if not audio_dir.is_dir():
        raise NotADirectoryError(f"audio folder {audio_dir} is not a folder")
    files = [path for path in visible_files(audio_dir) if is_audio(path)]
    ids = track_ids(audio_dir, files)
    return [(track_id, path, read_tags(path)) for track_id, path in zip(ids, files, strict=True)]


def match_tracks(tracks: list[dict], local: list[tuple[str, Path, dict]]):
    """Links Spotify track rows to local files (from `scan_audio`) by ISRC, else normalised
    artist + title. Returns (matches, unmatched rows)."""
    by_isrc, by_name = {}, {}
    for track_id, path, tags in local:
        if tags["isrc"]:
            by_isrc.setdefault(tags["isrc"], (track_id, path))
        for artist in artist_keys([tags["artist"]]):
            by_name.setdefault((artist, normalise(tags["title"])), (track_id, path))
    matches, unmatched = [], []
    for row in tracks:
        isrc = re.sub(r"[^A-Z0-9]", "", row.get("isrc", "").upper())
        names = [(a, normalise(row["name"])) for a in artist_keys(row["artists"].split("; "))]
        found = [(by_isrc[isrc], "isrc")] if isrc in by_isrc else []
        found += [(by_name[key], "artist+title") for key in names if key in by_name]
        if not found:
            unmatched.append(row)
            continue
        (track_id, path), how = found[0]
        matches.append(
            {
                "spotify_id": row["spotify_id"],
                "track_id": track_id,
                "path": str(path),
                "matched_by": how,
                "name": row["name"],
                "artists": row["artists"],
            }
        )
    return matches, unmatched
