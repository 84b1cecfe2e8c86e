"""The Spotify Web API through spotipy: login, the client, playlist export and track search.

Credentials come from SPOTIPY_CLIENT_ID, SPOTIPY_REDIRECT_URI (default
http://127.0.0.1:8888/callback) and, for `--auth client` only, SPOTIPY_CLIENT_SECRET. User
commands use Authorization Code with PKCE: `login` runs it once in the browser and saves the
token (refreshed automatically) for the other commands. No credential or token is printed or
logged: spotipy's debug logs, which contain them, pass through a redacting filter (`REDACTOR`).

Only endpoints open to new apps are used (playlist items, search, me, create playlist), never
audio features/analysis, recommendations or previews. Rate limits (HTTP 429) are retried after
the server's Retry-After delay, up to `max_wait` seconds (`CappedRetry`).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import requests
import spotipy
from spotipy.cache_handler import CacheFileHandler, MemoryCacheHandler
from spotipy.util import Retry

from myna_rpe_jax import errors
from myna_rpe_jax.spotify.match import artist_keys, normalise

API_URL = "https://api.spotify.com/v1/"
ACCOUNTS_URL = "https://accounts.spotify.com"
DEFAULT_REDIRECT_URI = "http://127.0.0.1:8888/callback"
DEFAULT_TOKEN_CACHE = Path.home() / ".cache" / "myna_rpe_jax" / "spotify_token.json"
# One scope for every user command, so one login serves them all.
SCOPE = (
    "playlist-read-private playlist-read-collaborative playlist-modify-private "
    "playlist-modify-public"
)
LOGIN_HINT = "run `python -m myna_rpe_jax.spotify login`"


# One kind of "problem the user can fix; the message says how" for every command.
UserError = errors.UserError


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
            # Whole tokens only: a placeholder id such as "x" must not eat every letter x.
            text = re.sub(
                rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "[redacted]", text
            )
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


def pending_login(auth: spotipy.SpotifyPKCE, token_cache: str | Path) -> Path:
    """Gives `auth` the PKCE verifier of the login in progress (TOKEN_CACHE.pkce), or a new
    one saved there, so the authorize URL printed by one `login` and the redirect URL passed
    to the next (--redirect-url) belong together. Returns the file (remove it once done)."""
    path = Path(str(token_cache) + ".pkce")
    try:
        auth.code_verifier = json.loads(path.read_text(encoding="utf-8"))["code_verifier"]
        auth.code_challenge = auth._get_code_challenge()
    except (OSError, ValueError, KeyError):
        auth.get_pkce_handshake_parameters()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps({"code_verifier": auth.code_verifier}), encoding="utf-8")
    return path


def redirect_code(url: str, redirect_uri: str) -> str:
    """The authorization code in the URL the browser was redirected to after login.

    Raises UserError when `url` is not such a URL (no http(s) scheme or no code= query) or
    carries Spotify's error (the user declined)."""
    parts = urlsplit(url.strip())
    query = dict(parse_qsl(parts.query))
    if parts.scheme in ("http", "https") and query.get("error"):
        raise UserError(
            f"Spotify sent the login back with error {query['error']!r} (declined?): {LOGIN_HINT}"
            " again and approve the app"
        )
    if parts.scheme not in ("http", "https") or not query.get("code"):
        raise UserError(
            f"{url.strip()!r} is not a redirect URL: expected the address your browser was sent"
            f" to after you approved the app, {redirect_uri}?code=..."
        )
    return query["code"]


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
