"""Spotify playlists in and out, with spotipy: export, match to local audio, create.

    python -m myna_rpe_jax.spotify login
    python -m myna_rpe_jax.spotify export-playlist URL_OR_ID --out tracks.csv
    python -m myna_rpe_jax.spotify match --tracks tracks.csv --audio DIR --out matches.csv
    python -m myna_rpe_jax.spotify create-playlist --name NAME --from generated.csv \
        --matches matches.csv --audio DIR

The command line only: login, the API client, rate limits (HTTP 429, up to --max-wait) and
the redaction of secrets from logs are in `api` (credentials come from
SPOTIPY_CLIENT_ID, SPOTIPY_REDIRECT_URI and, for `--auth client` only, SPOTIPY_CLIENT_SECRET);
reading tags and matching local files is `match`. A failure prints one line saying
what to do (`explain`), never a credential.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import requests
from spotipy.exceptions import SpotifyException, SpotifyOauthError

from myna_rpe_jax import errors, files
from myna_rpe_jax.spotify.api import (
    ACCOUNTS_URL,
    API_URL,
    DEFAULT_TOKEN_CACHE,
    LOGIN_HINT,
    REDACTOR,
    RateLimitTooLong,
    UserError,
    export_playlist,
    find_on_spotify,
    make_auth,
    make_client,
    pending_login,
    redirect_code,
)
from myna_rpe_jax.spotify.match import match_tracks, scan_audio

TRACK_FIELDS = ("spotify_id", "name", "artists", "album", "isrc", "duration_ms")
MATCH_FIELDS = ("spotify_id", "track_id", "path", "matched_by", "name", "artists")


def read_csv(path: str, required: Sequence[str]) -> list[dict]:
    """The rows of a UTF-8 CSV that has the `required` columns. utf-8-sig drops the byte-order
    mark Excel's "CSV UTF-8" writes, which would otherwise be part of the first column's name."""
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder, not a CSV file")
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path} lacks the column(s) {missing} (has {reader.fieldnames})")
            return list(reader)
    except UnicodeDecodeError as err:  # Latin-1 from an older Excel, or not text at all
        raise UserError(f"{path} is not UTF-8 text: re-save it as CSV UTF-8") from err


def write_csv(path: str, fields: Sequence[str], rows: list[dict]) -> None:
    with files.atomic_path(path) as partial, open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _pasted_redirect(prompt: str) -> str:
    """The redirect URL the user pastes at `prompt`; UserError without a terminal."""
    try:
        return input(prompt)
    except EOFError:
        raise UserError(
            "no terminal to paste the redirect URL into: open the URL above in a browser,"
            " approve the app, then run `python -m myna_rpe_jax.spotify login --redirect-url"
            " 'URL'` with the address the browser was sent to"
        ) from None


def cmd_login(args: argparse.Namespace) -> None:
    auth = make_auth(args, login=True)
    if args.redirect_url or args.no_browser:
        pending = pending_login(auth, args.token_cache)
        url = args.redirect_url
        if not url:
            prompt = f"Go to the following URL: {auth.get_authorize_url()}\n"
            url = _pasted_redirect(prompt + "Enter the URL you were redirected to: ")
        auth.get_access_token(code=redirect_code(url, auth.redirect_uri), check_cache=False)
        pending.unlink(missing_ok=True)
    else:
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
    login.add_argument(
        "--redirect-url",
        help="the URL the browser was sent to after approving the URL that `login"
        " --no-browser` printed (no terminal needed)",
    )
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


# The files a command reads, by flag, and the argparse names they are stored under.
INPUT_FLAGS = {"--tracks": "tracks", "--from": "source", "--matches": "matches"}


def output_problem(args: argparse.Namespace) -> str | None:
    """`--flag: why` for the first file the command would write that cannot be written (a
    folder by that name, or a file among its parents, or one of its own inputs), or None:
    found before any login, request or scan, not after them as `[Errno 17] File exists`."""
    outputs = {"--out": getattr(args, "out", None), "--unmatched": getattr(args, "unmatched", None)}
    if getattr(args, "auth", None) == "user":  # login saves it; the others refresh it
        outputs["--token-cache"] = args.token_cache
    for flag, path in outputs.items():
        if path and (problem := files.output_problem(path)):
            return f"{flag}: {problem}"
    out, unmatched = outputs["--out"], outputs["--unmatched"]
    if out and unmatched and files.same_file(out, unmatched):
        return "--unmatched names the --out file: the two lists would overwrite each other"
    inputs = {flag: getattr(args, name, None) for flag, name in INPUT_FLAGS.items()}
    return files.overwrite_problem(outputs, inputs)


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
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.max_wait < float("inf"):  # NaN too: it would lift the cap
        parser.error(f"--max-wait must be a number of seconds >= 0, got {args.max_wait}")
    if problem := output_problem(args):
        parser.error(problem)
    REDACTOR.install(
        os.environ.get("SPOTIPY_CLIENT_ID", ""), os.environ.get("SPOTIPY_CLIENT_SECRET", "")
    )
    try:
        args.run(args)
        return 0
    except (UserError, NotADirectoryError) as error:  # the latter: no --audio folder
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
    sys.exit(errors.run_cli(main, (OSError,)))  # e.g. an unwritable --out
