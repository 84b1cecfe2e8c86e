"""Spotify playlists in and out, with spotipy: export, match to local audio, create.

    python -m myna_rpe_jax.spotify login
    python -m myna_rpe_jax.spotify export-playlist URL_OR_ID --out tracks.csv
    python -m myna_rpe_jax.spotify match --tracks tracks.csv --audio DIR --out matches.csv
    python -m myna_rpe_jax.spotify create-playlist --name NAME --from generated.csv \
        --matches matches.csv --audio DIR

Credentials come from SPOTIPY_CLIENT_ID, SPOTIPY_REDIRECT_URI (default
http://127.0.0.1:8888/callback) and, for `--auth client` only, SPOTIPY_CLIENT_SECRET. User
commands use Authorization Code with PKCE: `login` runs it once in the browser and saves the
token (refreshed automatically) for the other commands. No credential or token is printed or
logged: spotipy's debug logs, which contain them, pass through a redacting filter.

Only endpoints open to new apps are used (playlist items, search, me, create playlist), never
audio features/analysis, recommendations or previews. Rate limits (HTTP 429) are retried after
the server's Retry-After delay, up to --max-wait seconds.
"""

from __future__ import annotations

import argparse
import base64
import csv
import logging
import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import requests
import soundfile as sf
import spotipy
from spotipy.cache_handler import CacheFileHandler, MemoryCacheHandler
from spotipy.exceptions import SpotifyException, SpotifyOauthError
from spotipy.util import Retry

API_URL = "https://api.spotify.com/v1/"
ACCOUNTS_URL = "https://accounts.spotify.com"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8888/callback"
DEFAULT_TOKEN_CACHE = Path.home() / ".cache" / "myna_rpe_jax" / "spotify_token.json"
# One scope for every user command, so one login serves them all.
SCOPE = (
    "playlist-read-private playlist-read-collaborative playlist-modify-private "
    "playlist-modify-public"
)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aif", ".aiff")
TRACK_FIELDS = ("spotify_id", "name", "artists", "album", "isrc", "duration_ms")
MATCH_FIELDS = ("spotify_id", "track_id", "path", "matched_by", "name", "artists")
LOGIN_HINT = "run `python -m myna_rpe_jax.spotify login`"


class UserError(Exception):
    """A problem the user can fix; the message says how."""


class RateLimitTooLong(Exception):
    """Spotify asked for a longer Retry-After than the user allows."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


class CappedRetry(Retry):
    """spotipy's retry policy, but it refuses Retry-After delays longer than `max_wait`."""

    def __init__(self, *args, max_wait: float = 60.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_wait = max_wait

    def new(self, **kwargs):
        retry = super().new(**kwargs)
        retry.max_wait = self.max_wait
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        seconds = super().parse_retry_after(retry_after)
        if seconds > self.max_wait:
            raise RateLimitTooLong(seconds)
        return seconds


class Redactor(logging.Filter):
    """Replaces credentials and tokens in log records with [redacted]."""

    _TOKENS = re.compile(
        r"((?:Bearer|Basic) |'(?:access_token|refresh_token|code|code_verifier|client_id|"
        r"client_secret)': '|[?&](?:client_id|code_challenge|code)=)[^'\s,}&]+"
    )
    LOGGERS = ("spotipy.client", "spotipy.oauth2", "spotipy.util", "spotipy.cache_handler")

    def __init__(self):
        super().__init__()
        self.secrets: set[str] = set()

    def redact(self, text: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return self._TOKENS.sub(r"\1[redacted]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), ()
        return True

    def install(self, client_id: str, client_secret: str) -> None:
        self.secrets = {s for s in (client_id, client_secret) if s}
        if client_id and client_secret:  # the Basic header spotipy logs at debug level
            self.secrets.add(base64.b64encode(f"{client_id}:{client_secret}".encode()).decode())
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)


REDACTOR = Redactor()


def _env(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if not value:
        raise UserError(
            f"{name} is not set: create an app at https://developer.spotify.com/dashboard and "
            f"export {name}=... (see README, 'Spotify')"
        )
    return value


def make_auth(args: argparse.Namespace, *, login: bool = False):
    """The auth manager for args.auth ('client' or 'user'), pointed at args.accounts_url."""
    if args.auth == "client":
        auth = spotipy.SpotifyClientCredentials(
            _env("SPOTIPY_CLIENT_ID"),
            _env("SPOTIPY_CLIENT_SECRET"),
            cache_handler=MemoryCacheHandler(),
        )
    else:
        Path(args.token_cache).parent.mkdir(parents=True, exist_ok=True)
        auth = spotipy.SpotifyPKCE(
            client_id=_env("SPOTIPY_CLIENT_ID"),
            redirect_uri=_env("SPOTIPY_REDIRECT_URI", DEFAULT_REDIRECT_URI),
            scope=SCOPE,
            cache_handler=CacheFileHandler(cache_path=str(args.token_cache)),
            open_browser=not getattr(args, "no_browser", False),
        )
        auth.OAUTH_AUTHORIZE_URL = args.accounts_url.rstrip("/") + "/authorize"
    auth.OAUTH_TOKEN_URL = args.accounts_url.rstrip("/") + "/api/token"
    # Without a saved login, spotipy would start the interactive browser flow mid-command.
    cached = auth.cache_handler.get_cached_token
    if args.auth == "user" and not login and auth.validate_token(cached()) is None:
        raise UserError(f"no saved Spotify login in {args.token_cache}: {LOGIN_HINT} first")
    return auth


def make_client(args: argparse.Namespace, auth) -> spotipy.Spotify:
    """A spotipy client on args.api_url whose retries honour Retry-After up to args.max_wait."""
    retry = CappedRetry(
        total=3,
        connect=None,
        read=False,
        status=3,
        backoff_factor=0.3,
        allowed_methods=frozenset(["GET", "POST", "PUT", "DELETE"]),
        status_forcelist=spotipy.Spotify.default_retry_codes,
        max_wait=args.max_wait,
    )
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
    session.mount("https://", requests.adapters.HTTPAdapter(max_retries=retry))
    client = spotipy.Spotify(auth_manager=auth, requests_session=session, requests_timeout=15)
    client.prefix = args.api_url.rstrip("/") + "/"
    return client


def track_row(track: dict) -> dict:
    return {
        "spotify_id": track["id"],
        "name": track.get("name", ""),
        "artists": "; ".join(a["name"] for a in track.get("artists", [])),
        "album": (track.get("album") or {}).get("name", ""),
        "isrc": (track.get("external_ids") or {}).get("isrc", ""),
        "duration_ms": track.get("duration_ms", ""),
    }


def export_playlist(client: spotipy.Spotify, playlist: str) -> tuple[list[dict], int]:
    """All tracks of a playlist (every page) as rows, and the number of entries skipped."""
    page = client.playlist_items(playlist, additional_types=("track",), limit=50)
    rows, skipped = [], 0
    while page:
        for entry in page["items"]:
            # Spotify renamed "track" to "item" in playlist entries in February 2026.
            track = entry.get("item") or entry.get("track")
            if not track or track.get("type", "track") != "track" or not track.get("id"):
                skipped += 1  # local files, episodes, removed tracks
                continue
            rows.append(track_row(track))
        page = client.next(page) if page.get("next") else None
    return rows, skipped


# ---- Tags and matching ----------------------------------------------------------------------

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

    track_id is the path relative to audio_dir without its extension, with "/" separators:
    the name `python -m myna_rpe_jax.embed` gives the file's embedding.
    """
    if not audio_dir.is_dir():
        raise UserError(f"audio folder {audio_dir} does not exist")
    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    return [(p.relative_to(audio_dir).with_suffix("").as_posix(), p, read_tags(p)) for p in files]


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


def find_on_spotify(client: spotipy.Spotify, tags: dict) -> str | None:
    """The Spotify id of a local track: by ISRC, else by a search checked on artist + title."""
    want = {(a, normalise(tags["title"])) for a in artist_keys([tags["artist"]])}
    queries = [f"isrc:{tags['isrc']}"] if tags["isrc"] else []
    queries += [f"track:{tags['title']} artist:{tags['artist']}"] if tags["artist"] else []
    for query in queries:
        for track in client.search(q=query, type="track", limit=10)["tracks"]["items"]:
            names = {
                (a, normalise(track["name"]))
                for a in artist_keys([a["name"] for a in track["artists"]])
            }
            isrc = (track.get("external_ids") or {}).get("isrc", "")
            if (tags["isrc"] and isrc == tags["isrc"]) or names & want:
                return track["id"]
    return None


# ---- Command line ---------------------------------------------------------------------------


def read_csv(path: str, required: Sequence[str]) -> list[dict]:
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks the column(s) {missing} (has {reader.fieldnames})")
        return list(reader)


def write_csv(path: str, fields: Sequence[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def cmd_login(args: argparse.Namespace) -> None:
    auth = make_auth(args, login=True)
    auth.get_access_token(check_cache=False)
    user = make_client(args, auth).current_user()
    print(
        f"logged in as {user.get('display_name') or user['id']}; token saved in {args.token_cache}"
    )


def cmd_export(args: argparse.Namespace) -> None:
    rows, skipped = export_playlist(make_client(args, make_auth(args)), args.playlist)
    write_csv(args.out, TRACK_FIELDS, rows)
    note = f" (skipped {skipped} local files, episodes or unavailable tracks)" if skipped else ""
    print(f"wrote {len(rows)} tracks to {args.out}{note}")


def cmd_match(args: argparse.Namespace) -> None:
    tracks = read_csv(args.tracks, ("spotify_id", "name", "artists"))
    local = scan_audio(Path(args.audio))
    matches, unmatched = match_tracks(tracks, local)
    write_csv(args.out, MATCH_FIELDS, matches)
    print(
        f"matched {len(matches)} of {len(tracks)} tracks to {len(local)} audio files under "
        f"{args.audio}; wrote {args.out}"
    )
    if unmatched:
        print(f"unmatched ({len(unmatched)}):")
        for row in unmatched:
            print(f"  {row['artists']} - {row['name']} ({row['spotify_id']})")
    if args.unmatched:
        write_csv(args.unmatched, TRACK_FIELDS, unmatched)


def cmd_create(args: argparse.Namespace) -> None:
    generated = read_csv(args.source, ("track_id",))
    known = (
        {r["track_id"]: r["spotify_id"] for r in read_csv(args.matches, ("track_id", "spotify_id"))}
        if args.matches
        else {}
    )
    local = {tid: tags for tid, _, tags in scan_audio(Path(args.audio))} if args.audio else {}
    client = make_client(args, make_auth(args))
    ids, missing = [], []
    for row in generated:
        tid = row["track_id"]
        found = row.get("spotify_id") or known.get(tid)
        if not found and tid in local:
            found = find_on_spotify(client, local[tid])
        if found:
            ids.append(found)
        else:
            missing.append(tid)
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise UserError(
            f"none of the {len(generated)} tracks in {args.source} has a Spotify id: "
            "pass --matches (from `match`) and/or --audio to search by tags"
        )
    created = client.current_user_playlist_create(
        args.name, public=args.public, description=args.description
    )
    for start in range(0, len(ids), 100):  # the API adds at most 100 items per request
        client.playlist_add_items(created["id"], ids[start : start + 100])
    url = (created.get("external_urls") or {}).get("spotify", created["id"])
    print(f"created playlist {args.name!r} with {len(ids)} tracks: {url}")
    if missing:
        print(f"not found on Spotify ({len(missing)}): {', '.join(missing)}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m myna_rpe_jax.spotify", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--api-url", default=API_URL, help="Web API base URL (tests, proxies)")
    p.add_argument("--accounts-url", default=ACCOUNTS_URL, help="accounts service base URL")
    p.add_argument("--token-cache", default=str(DEFAULT_TOKEN_CACHE), help="saved login")
    p.add_argument(
        "--max-wait",
        type=float,
        default=120.0,
        help="longest Retry-After (s) to wait on rate limits before giving up",
    )
    sub = p.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="log in with PKCE in the browser and save the token")
    login.add_argument("--no-browser", action="store_true", help="print the URL instead")
    login.set_defaults(run=cmd_login, auth="user")
    export = sub.add_parser("export-playlist", help="write a playlist's tracks to CSV")
    export.add_argument("playlist", help="playlist URL, URI or id")
    export.add_argument("--out", default="tracks.csv")
    export.add_argument(
        "--auth",
        choices=("user", "client"),
        default="user",
        help="user: saved login (Development Mode apps); client: app only",
    )
    export.set_defaults(run=cmd_export)
    match = sub.add_parser("match", help="link exported tracks to local audio files")
    match.add_argument("--tracks", required=True)
    match.add_argument("--audio", required=True)
    match.add_argument("--out", default="matches.csv")
    match.add_argument("--unmatched", help="also write the unmatched tracks to this CSV")
    match.set_defaults(run=cmd_match)
    create = sub.add_parser("create-playlist", help="create a playlist from a generated CSV")
    create.add_argument("--name", required=True)
    create.add_argument("--from", dest="source", required=True, help="CSV with track_id")
    create.add_argument("--matches", help="CSV from `match` mapping track_id to spotify_id")
    create.add_argument("--audio", help="audio folder: find other tracks by tags (search)")
    create.add_argument("--public", action="store_true")
    create.add_argument("--description", default="Generated with myna-rpe-jax hull geometry")
    create.set_defaults(run=cmd_create, auth="user")
    return p


def explain(error: Exception, args: argparse.Namespace) -> str:
    """What went wrong and what to do, for errors from Spotify or the network."""
    if isinstance(error, RateLimitTooLong):
        return (
            f"Spotify asks to wait {error.seconds:.0f} s before the next request (rate "
            f"limit), more than --max-wait {args.max_wait:.0f}: try again later"
        )
    if isinstance(error, SpotifyOauthError):
        code = getattr(error, "error", None)
        what = f"{code}: {getattr(error, 'error_description', None) or error}"
        if code == "invalid_client":
            return (
                f"Spotify refused the app credentials ({what}): check SPOTIPY_CLIENT_ID and "
                "SPOTIPY_CLIENT_SECRET against your app's dashboard (values not shown)"
            )
        return f"Spotify refused the saved login ({what}): {LOGIN_HINT} again"
    if isinstance(error, requests.RequestException):
        return f"cannot reach Spotify ({type(error).__name__}): check the network and --api-url"
    message = str(error.msg).split(":\n", 1)[-1].strip()
    status = error.http_status
    if status == 401:
        user = getattr(args, "auth", "user") == "user"
        fix = LOGIN_HINT + " again" if user else "check SPOTIPY_CLIENT_ID/SECRET"
        return f"Spotify rejected the access token (401: {message}): {fix}"
    if status == 403:
        return (
            f"Spotify refused access (403: {message}). Apps in Development Mode can read only "
            "playlists the logged-in user owns or collaborates on, and only for users added "
            "under 'User Management' in the app's dashboard"
        )
    if status == 404:
        return f"not found on Spotify (404: {message}): check the playlist URL or id"
    if status == 429:
        return "still rate-limited by Spotify after retrying (429): wait a few minutes"
    if status == 400 and "URL" in message:
        return f"{getattr(args, 'playlist', '')!r} is not a Spotify playlist URL, URI or id"
    return f"Spotify API error {status}: {message}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    REDACTOR.install(
        os.environ.get("SPOTIPY_CLIENT_ID", ""), os.environ.get("SPOTIPY_CLIENT_SECRET", "")
    )
    try:
        args.run(args)
        return 0
    except UserError as error:
        message = str(error)
    except (
        RateLimitTooLong,
        SpotifyOauthError,
        SpotifyException,
        requests.RequestException,
    ) as error:
        message = explain(error, args)
    print(f"error: {REDACTOR.redact(message)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
