"""The Spotify CLI against a fake Spotify (Web API + accounts service) served on 127.0.0.1.

The real spotipy client talks real HTTP to the fake; only the base URLs differ from production.
Every run through the `cli` fixture checks that no credential or token reaches stdout,
stderr or the logs (`assert_no_secret`); so do the usage-error tests that hold a saved login.
"""

import base64
import csv
import hashlib
import json
import logging
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, parse_qsl, urlsplit

import numpy as np
import pytest
import soundfile as sf

from myna_rpe_jax.data.formats import AUDIO_EXTENSIONS
from myna_rpe_jax.spotify import __main__ as spotify_cli
from myna_rpe_jax.spotify import api, match

CLIENT_ID, CLIENT_SECRET = "cid-Zx81qPaQ", "csecret-Qm42LrTu"
TOKENS = ("cc-token-9f3", "user-token-7d1", "refresh-ok-5b2")
SECRETS = (
    CLIENT_ID,
    CLIENT_SECRET,
    base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode(),
    *TOKENS,
)


def make_track(i, name, artists, isrc=""):
    return {
        "id": f"trk{i:03d}",
        "type": "track",
        "name": name,
        "uri": f"spotify:track:trk{i:03d}",
        "artists": [{"name": a} for a in artists],
        "album": {"name": f"Album {i // 10}"},
        "external_ids": {"isrc": isrc},
        "duration_ms": 180000 + i,
    }


class FakeSpotify(ThreadingHTTPServer):
    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server_address[1]}"
        self.secret = CLIENT_SECRET
        self.tokens = {TOKENS[0], TOKENS[1]}
        self.challenges, self.verified = {}, []
        self.rate_limits = {}
        self.log = []
        self.created = {}
        big = [
            {"item": make_track(i, f"Song {i}", [f"Artist {i % 7}"], f"USXX{i:08d}")}
            for i in range(120)
        ]
        big[5:5] = [
            {"item": {"type": "track", "id": None, "is_local": True}},
            {"item": {"type": "episode", "id": "ep1"}},
        ]
        legacy = [{"track": make_track(300 + i, f"Old {i}", ["Oldie"])} for i in range(3)]
        self.playlists = {"big": big, "legacy": legacy}
        self.catalogue = [
            make_track(201, "Xtal", ["Someone Else"]),
            make_track(200, "Xtal", ["Aphex Twin"], "GBCCC9200003"),
        ]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers:
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message, headers=()):
        self.reply(status, {"error": {"status": status, "message": message}}, headers)

    def do_GET(self):
        self.route("GET", b"")

    def do_POST(self):
        self.route("POST", self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def route(self, method, body):
        s, url = self.server, urlsplit(self.path)
        url = url._replace(path=url.path.rstrip("/"))  # spotipy asks for "me/"
        query = dict(parse_qsl(url.query))
        s.log.append((method, url.path, query, time.monotonic()))
        if url.path == "/api/token":
            return self.token({k: v[0] for k, v in parse_qs(body.decode()).items()})
        if s.rate_limits.get(url.path):
            return self.error(
                429, "API rate limit exceeded", [("Retry-After", s.rate_limits[url.path].pop(0))]
            )
        if self.headers.get("Authorization", "").removeprefix("Bearer ") not in s.tokens:
            return self.error(401, "Invalid access token")
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["v1", "playlists"] and parts[3:] == ["items"]:
            return self.items(method, parts[2], query, body)
        if url.path == "/v1/me" and method == "GET":
            return self.reply(200, {"id": "tester", "display_name": "Test User"})
        if url.path == "/v1/me/playlists" and method == "POST":
            new = f"new{len(s.created)}"
            s.created[new] = {"request": json.loads(body), "uris": [], "adds": 0}
            return self.reply(
                201,
                {
                    "id": new,
                    "external_urls": {"spotify": f"https://open.spotify.com/playlist/{new}"},
                },
            )
        if url.path == "/v1/search":
            found = [
                t
                for t in s.catalogue
                if t["name"].casefold() in query["q"].casefold()
                or query["q"] == f"isrc:{t['external_ids']['isrc']}"
            ]
            return self.reply(200, {"tracks": {"items": found, "next": None}})
        return self.error(404, "Service not found")

    def items(self, method, playlist, query, body):
        s = self.server
        if method == "POST":
            uris = json.loads(body)
            uris = uris["uris"] if isinstance(uris, dict) else uris
            if playlist not in s.created or len(uris) > 100:
                return self.error(400, "Bad request")
            s.created[playlist]["uris"] += uris
            s.created[playlist]["adds"] += 1
            return self.reply(201, {"snapshot_id": "snap"})
        if playlist not in s.playlists:
            return self.error(404, "Resource not found")
        entries, offset = s.playlists[playlist], int(query.get("offset", 0))
        limit = int(query.get("limit", 20))
        more = offset + limit < len(entries)
        nxt = f"{s.base}/v1/playlists/{playlist}/items?offset={offset + limit}&limit={limit}"
        self.reply(
            200,
            {
                "items": entries[offset : offset + limit],
                "total": len(entries),
                "next": nxt if more else None,
            },
        )

    def token(self, form):
        s, grant = self.server, form.get("grant_type")
        if grant == "client_credentials":
            basic = base64.b64encode(f"{CLIENT_ID}:{s.secret}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {basic}":
                return self.reply(
                    400, {"error": "invalid_client", "error_description": "Invalid client secret"}
                )
            return self.reply(
                200, {"access_token": TOKENS[0], "token_type": "Bearer", "expires_in": 3600}
            )
        if grant == "authorization_code":
            challenge = s.challenges.get(form.get("code"))
            digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
            if challenge != base64.urlsafe_b64encode(digest).decode().rstrip("="):
                return self.reply(400, {"error": "invalid_grant", "error_description": "bad"})
            s.verified.append(form["code"])
        elif grant != "refresh_token" or form.get("refresh_token") != TOKENS[2]:
            return self.reply(
                400, {"error": "invalid_grant", "error_description": "Refresh token revoked"}
            )
        self.reply(
            200,
            {
                "access_token": TOKENS[1],
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": TOKENS[2],
                "scope": api.SCOPE,
            },
        )


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", CLIENT_SECRET)
    monkeypatch.setenv("SPOTIPY_REDIRECT_URI", "http://127.0.0.1:8888/callback")
    fake = FakeSpotify()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked"


@pytest.fixture
def cli(server, tmp_path, capsys, caplog):
    """Runs the CLI in-process against the fake; returns (exit code, stdout, stderr)."""

    def run(*argv):
        caplog.set_level(logging.DEBUG)  # spotipy's debug lines carry headers and bodies
        code = spotify_cli.main(
            [
                "--api-url",
                f"{server.base}/v1/",
                "--accounts-url",
                server.base,
                "--token-cache",
                str(tmp_path / "token.json"),
                *argv,
            ]
        )
        out, err = capsys.readouterr()
        assert_no_secret(out + err + caplog.text)
        caplog.clear()
        return code, out, err

    return run


def save_login(path, token=TOKENS[1], expires_in=3600, refresh=TOKENS[2]):
    path.write_text(
        json.dumps(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "refresh_token": refresh,
                "expires_at": int(time.time()) + expires_in,
                "scope": api.SCOPE,
            }
        )
    )


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def requests_to(server, path):
    return [entry for entry in server.log if entry[1] == path]


def test_export_reads_every_page_with_client_credentials(cli, server, tmp_path):
    out = tmp_path / "tracks.csv"
    code, stdout, _ = cli("export-playlist", "big", "--auth", "client", "--out", str(out))
    assert code == 0 and "wrote 120 tracks" in stdout and "skipped 2" in stdout
    rows = read_rows(out)
    assert [r["spotify_id"] for r in rows] == [f"trk{i:03d}" for i in range(120)]
    assert rows[8] == {
        "spotify_id": "trk008",
        "name": "Song 8",
        "artists": "Artist 1",
        "album": "Album 0",
        "isrc": "USXX00000008",
        "duration_ms": "180008",
    }
    assert len(requests_to(server, "/v1/playlists/big/items")) == 3
    assert len(requests_to(server, "/api/token")) == 1


def test_export_with_saved_login_accepts_urls_and_legacy_entries(cli, tmp_path):
    save_login(tmp_path / "token.json")
    url = "https://open.spotify.com/playlist/legacy?si=abc"
    code, stdout, _ = cli("export-playlist", url, "--out", str(tmp_path / "t.csv"))
    assert code == 0 and "wrote 3 tracks" in stdout
    assert [r["name"] for r in read_rows(tmp_path / "t.csv")] == ["Old 0", "Old 1", "Old 2"]


def test_rate_limit_waits_for_retry_after(cli, server, tmp_path):
    server.rate_limits["/v1/playlists/big/items"] = ["1"]
    code, _, _ = cli("export-playlist", "big", "--auth", "client", "--out", str(tmp_path / "t.csv"))
    assert code == 0 and len(read_rows(tmp_path / "t.csv")) == 120
    first, retry = requests_to(server, "/v1/playlists/big/items")[:2]
    assert retry[3] - first[3] >= 1.0


def test_rate_limit_longer_than_max_wait_fails_fast(cli, server, tmp_path):
    server.rate_limits["/v1/playlists/big/items"] = ["3600"]
    start = time.monotonic()
    code, _, err = cli("--max-wait", "5", "export-playlist", "big", "--auth", "client")
    assert code == 1 and "asks to wait 3600 s" in err and "--max-wait 5" in err
    assert time.monotonic() - start < 5


def test_missing_playlist_and_bad_ids_are_explained(cli):
    code, _, err = cli("export-playlist", "nope", "--auth", "client")
    assert code == 1 and "not found on Spotify (404: Resource not found)" in err
    code, _, err = cli("export-playlist", "not a playlist!", "--auth", "client")
    assert code == 1 and "is not a Spotify playlist URL, URI or id" in err


def test_rejected_token_asks_to_log_in_again(cli, tmp_path):
    save_login(tmp_path / "token.json", token="stale-token")
    code, _, err = cli("export-playlist", "big")
    assert code == 1
    assert "rejected the access token (401: Invalid access token)" in err and "login" in err


def test_expired_login_is_refreshed_or_reported(cli, server, tmp_path):
    save_login(tmp_path / "token.json", token="old", expires_in=-10)
    code, _, _ = cli("export-playlist", "legacy", "--out", str(tmp_path / "t.csv"))
    assert code == 0 and requests_to(server, "/api/token")
    assert json.loads((tmp_path / "token.json").read_text())["access_token"] == TOKENS[1]
    save_login(tmp_path / "token.json", token="old", expires_in=-10, refresh="revoked")
    code, _, err = cli("export-playlist", "legacy")
    assert code == 1
    assert "refused the saved login (invalid_grant: Refresh token revoked)" in err


def test_credential_problems_are_explained_without_values(cli, server, monkeypatch, tmp_path):
    server.secret = "another-secret"
    code, _, err = cli("export-playlist", "big", "--auth", "client")
    assert code == 1 and "refused the app credentials (invalid_client" in err
    code, _, err = cli("export-playlist", "big")
    assert code == 1 and "no saved Spotify login" in err and not server.log[1:]
    monkeypatch.delenv("SPOTIPY_CLIENT_ID")
    code, _, err = cli("export-playlist", "big", "--auth", "client")
    assert code == 1 and "SPOTIPY_CLIENT_ID is not set" in err


def test_login_runs_pkce_and_saves_the_token(cli, server, tmp_path, monkeypatch):
    prompts = []

    def authorize_in_browser(prompt):
        # Plays the user approving the app: the authorize URL's challenge is bound to a code.
        prompts.append(prompt)
        url = re.search(r"http\S+", prompt).group(0)
        query = dict(parse_qsl(urlsplit(url).query))
        server.challenges["code-1"] = query["code_challenge"]
        return f"{query['redirect_uri']}?code=code-1"

    monkeypatch.setattr("builtins.input", authorize_in_browser)
    code, stdout, _ = cli("login", "--no-browser")
    assert code == 0 and "logged in as Test User" in stdout
    assert prompts[0].startswith(f"Go to the following URL: {server.base}/authorize?")
    assert server.verified == ["code-1"]
    assert json.loads((tmp_path / "token.json").read_text())["access_token"] == TOKENS[1]


def test_login_without_a_terminal_resumes_with_redirect_url(cli, server, tmp_path, monkeypatch):
    prompts = []

    def no_terminal(prompt):
        prompts.append(prompt)
        raise EOFError  # what input() does when stdin is not a terminal (closed or empty)

    monkeypatch.setattr("builtins.input", no_terminal)
    code, _, err = cli("login", "--no-browser")
    assert code == 1 and "no terminal" in err and "--redirect-url" in err
    assert "Traceback" not in err and not server.verified
    # The user opens the printed URL; Spotify binds its challenge to the code it redirects with.
    query = dict(parse_qsl(urlsplit(re.search(r"http\S+", prompts[0]).group(0)).query))
    server.challenges["code-2"] = query["code_challenge"]
    redirect = f"{query['redirect_uri']}?code=code-2"
    code, stdout, _ = cli("login", "--redirect-url", redirect)
    assert code == 0 and "logged in as Test User" in stdout
    assert server.verified == ["code-2"]
    assert not (tmp_path / "token.json.pkce").exists()


@pytest.mark.parametrize(
    "pasted, shown",
    [
        ("hello", "'hello'"),
        # A code in the pasted string is redacted like every code the command prints.
        ("ftp://127.0.0.1/callback?code=1", "'ftp://127.0.0.1/callback?code=[redacted]'"),
        ("http://x/?a=1", "'http://x/?a=1'"),
    ],
)
def test_a_pasted_string_that_is_not_a_redirect_url_is_named(
    cli, server, monkeypatch, pasted, shown
):
    monkeypatch.setattr("builtins.input", lambda prompt: pasted)
    code, _, err = cli("login", "--no-browser")
    assert code == 1 and f"{shown} is not a redirect URL" in err and "code=1" not in err
    assert "cannot reach Spotify" not in err and not server.verified
    code, _, err = cli("login", "--redirect-url", pasted)
    assert code == 1 and "is not a redirect URL" in err


def write_audio(path, fmt, **tags):
    path.parent.mkdir(parents=True, exist_ok=True)
    with sf.SoundFile(path, "w", 8000, 1, format=fmt) as f:
        for key, value in tags.items():
            setattr(f, key, value)
        f.write(np.zeros(800, np.float32))


def add_flac_comments(path, comments):
    """Inserts a VORBIS_COMMENT block after STREAMINFO (FLAC format spec)."""
    data = path.read_bytes()
    size = int.from_bytes(data[5:8], "big")
    entries = [f"{k}={v}".encode() for k, v in comments.items()]
    block = (4).to_bytes(4, "little") + b"test" + len(entries).to_bytes(4, "little")
    block += b"".join(len(e).to_bytes(4, "little") + e for e in entries)
    header = bytes([(data[4] & 0x80) | 4]) + len(block).to_bytes(3, "big")
    path.write_bytes(
        data[:4] + bytes([data[4] & 0x7F]) + data[5 : 8 + size] + header + block + data[8 + size :]
    )


def add_id3(path, frames):
    """Prepends an ID3v2.3 tag of UTF-16 text frames (ID3v2.3 spec)."""
    body = b""
    for frame_id, text in frames.items():
        payload = b"\x01" + text.encode("utf-16")
        body += frame_id.encode() + len(payload).to_bytes(4, "big") + b"\0\0" + payload
    size = bytes((len(body) >> shift) & 0x7F for shift in (21, 14, 7, 0))
    path.write_bytes(b"ID3\x03\x00\x00" + size + body + path.read_bytes())


def test_match_links_by_isrc_tags_and_file_names(cli, tmp_path):
    audio = tmp_path / "music"
    write_audio(audio / "bjork.flac", "FLAC")
    add_flac_comments(
        audio / "bjork.flac", {"ARTIST": "Bjork", "TITLE": "Hyper", "ISRC": "GB-AAA-94-00001"}
    )
    write_audio(audio / "a/wl.mp3", "MP3")
    add_id3(audio / "a/wl.mp3", {"TIT2": "Wíndowlicker", "TPE1": "Aphex", "TSRC": "GBBBB9900002"})
    write_audio(audio / "joga.wav", "WAV", artist="Bjork feat. Someone", title="Joga (Remastered)")
    write_audio(audio / "sub/03 - Daft Punk - One More Time.wav", "WAV")
    # The test's tag writers are checked by libsndfile, an independent reader.
    with sf.SoundFile(audio / "a/wl.mp3") as f:
        assert f.title == "Wíndowlicker"
    with sf.SoundFile(audio / "bjork.flac") as f:
        assert f.artist == "Bjork"
    tracks = tmp_path / "tracks.csv"
    spotify_cli.write_csv(
        str(tracks),
        spotify_cli.TRACK_FIELDS,
        [
            {"spotify_id": "s1", "name": "Hyperballad", "artists": "Björk", "isrc": "GBAAA9400001"},
            {
                "spotify_id": "s2",
                "name": "Windowlicker",
                "artists": "Aphex Twin",
                "isrc": "GBBBB9900002",
            },
            {"spotify_id": "s3", "name": "Jóga - Remastered 2002", "artists": "Björk; Someone"},
            {"spotify_id": "s4", "name": "One More Time", "artists": "Daft Punk"},
            {"spotify_id": "s5", "name": "Missing Song", "artists": "Nobody"},
        ],
    )
    out = tmp_path / "matches.csv"
    code, stdout, _ = cli(
        "match", "--tracks", str(tracks), "--audio", str(audio), "--out", str(out)
    )
    assert code == 0 and "matched 4 of 5 tracks to 4 audio files" in stdout
    assert "Nobody - Missing Song (s5)" in stdout
    got = {r["spotify_id"]: (r["track_id"], r["matched_by"]) for r in read_rows(out)}
    assert got == {
        "s1": ("bjork", "isrc"),
        "s2": ("a/wl", "isrc"),
        "s3": ("joga", "artist+title"),
        "s4": ("sub/03 - Daft Punk - One More Time", "artist+title"),
    }


def test_match_scans_every_audio_extension_that_embedding_reads(tmp_path):
    """One list of extensions: each one embedding accepts (any case) is scanned and matched."""
    audio = tmp_path / "music"
    audio.mkdir()
    names = {
        ext: f"Band {i} - Song {i}{ext.upper() if i % 2 else ext}"
        for i, ext in enumerate(sorted(AUDIO_EXTENSIONS))
    }
    for name in names.values():
        (audio / name).write_bytes(b"not decodable: tags come from the name")
    (audio / "Band x - Notes.txt").write_text("not audio")
    local = match.scan_audio(audio)
    assert sorted(path.name for _, path, _ in local) == sorted(names.values())
    tracks = [
        {"spotify_id": ext, "name": f"Song {i}", "artists": f"Band {i}"}
        for i, ext in enumerate(sorted(AUDIO_EXTENSIONS))
    ]
    matches, unmatched = match.match_tracks(tracks, local)
    assert not unmatched
    assert {m["spotify_id"]: m["path"] for m in matches} == {
        ext: str(audio / name) for ext, name in names.items()
    }


def test_match_sees_the_files_and_track_ids_that_embedding_sees(tmp_path):
    """Hidden files (macOS `._` forks) are skipped by both; files that differ only in
    extension keep it in both; the ids are the same."""
    from myna_rpe_jax.embed.collection import list_audio

    audio = tmp_path / "music"
    for name in ["A/Song.mp3", "A/._Song.mp3", ".hidden/B - C.wav", "Twin.wav", "Twin.flac"]:
        (audio / name).parent.mkdir(parents=True, exist_ok=True)
        (audio / name).write_bytes(b"x")
    local = match.scan_audio(audio)
    ids = [track_id for track_id, _, _ in local]
    assert ids == ["A/Song", "Twin.flac", "Twin.wav"]
    embedded, _ = list_audio(audio)
    assert [(track_id, path) for track_id, path, _ in local] == embedded


def test_match_reports_a_missing_audio_folder(cli, tmp_path):
    tracks = tmp_path / "tracks.csv"
    spotify_cli.write_csv(str(tracks), spotify_cli.TRACK_FIELDS, [])
    code, _, err = cli("match", "--tracks", str(tracks), "--audio", str(tmp_path / "nowhere"))
    assert code == 1 and err == f"error: audio folder {tmp_path / 'nowhere'} is not a folder\n"


def test_match_reads_excels_csv_utf8_with_a_byte_order_mark(cli, tmp_path):
    write_audio(tmp_path / "music/Björk - Jóga.wav", "WAV")
    tracks = tmp_path / "tracks.csv"
    tracks.write_text("spotify_id,name,artists\ns1,Jóga,Björk\n", encoding="utf-8-sig")
    assert tracks.read_bytes().startswith(b"\xef\xbb\xbf")
    out = tmp_path / "matches.csv"
    code, stdout, err = cli(
        "match", "--tracks", str(tracks), "--audio", str(tmp_path / "music"), "--out", str(out)
    )
    assert code == 0 and "matched 1 of 1 tracks" in stdout, err
    assert [(r["spotify_id"], r["track_id"]) for r in read_rows(out)] == [("s1", "Björk - Jóga")]


def write_latin1_tracks(path):
    path.write_bytes("spotify_id,name,artists\ns1,Jóga,Björk\n".encode("latin-1"))


def write_wav(path):
    sf.write(path, np.zeros(800, np.float32), 44100)


@pytest.mark.parametrize(
    "name, write", [("tracks.csv", write_latin1_tracks), ("song.wav", write_wav)]
)
def test_a_csv_that_is_not_utf8_is_named(cli, tmp_path, name, write):
    tracks = tmp_path / name
    write(tracks)
    (tmp_path / "music").mkdir()
    code, _, err = cli("match", "--tracks", str(tracks), "--audio", str(tmp_path / "music"))
    assert code == 1 and err == f"error: {tracks} is not UTF-8 text: re-save it as CSV UTF-8\n"


def test_a_folder_given_as_a_csv_is_named(cli, tmp_path):
    code, _, err = cli("create-playlist", "--name", "x", "--from", str(tmp_path))
    assert code == 1 and err == f"error: {tmp_path} is a folder, not a CSV file\n"


def test_cli_imports_no_audio_decoders():
    """The Spotify CLI stays light: no librosa (audio.py) or jax on import."""
    code = "import sys, myna_rpe_jax.spotify; print(sorted({'librosa', 'jax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_create_playlist_from_generated_tracks(cli, server, tmp_path):
    save_login(tmp_path / "token.json")
    matches = [{"spotify_id": f"trk{i:03d}", "track_id": f"lib/t{i:03d}"} for i in range(150)]
    spotify_cli.write_csv(str(tmp_path / "matches.csv"), ["spotify_id", "track_id"], matches)
    write_audio(tmp_path / "music/other/Aphex Twin - Xtal.wav", "WAV")
    generated = [{"track_id": m["track_id"]} for m in matches[::-1]]
    generated[3:3] = [{"track_id": "other/Aphex Twin - Xtal"}, {"track_id": "lost/track"}]
    spotify_cli.write_csv(str(tmp_path / "generated.csv"), ["track_id"], generated)
    code, stdout, _ = cli(
        "create-playlist",
        "--name",
        "Hull mix",
        "--from",
        str(tmp_path / "generated.csv"),
        "--matches",
        str(tmp_path / "matches.csv"),
        "--audio",
        str(tmp_path / "music"),
    )
    assert code == 0
    assert (
        "created playlist 'Hull mix' with 151 tracks: https://open.spotify.com/playlist/new0"
        in stdout
    )
    assert "not found on Spotify (1): lost/track" in stdout
    made = server.created["new0"]
    assert made["request"]["name"] == "Hull mix" and made["request"]["public"] is False
    want = [f"trk{i:03d}" for i in (149, 148, 147, 200, *range(146, -1, -1))]
    assert made["uris"] == [f"spotify:track:{i}" for i in want] and made["adds"] == 2


def test_an_output_that_is_an_input_is_a_usage_error(cli, tmp_path, capsys):
    """`match --tracks sp.csv --out sp.csv` would replace the export with the matches, and
    --unmatched on --out would overwrite one list with the other: refused before the scan."""
    (tmp_path / "music").mkdir()
    tracks = tmp_path / "sp.csv"
    spotify_cli.write_csv(str(tracks), spotify_cli.TRACK_FIELDS, [])
    before = tracks.read_bytes()
    match = ["match", "--tracks", str(tracks), "--audio", str(tmp_path / "music")]
    other = str(tmp_path / "m.csv")
    for argv, message in [
        ([*match, "--out", str(tracks)], f"--out {tracks} is the --tracks file"),
        ([*match, "--out", other, "--unmatched", str(tracks)], "--unmatched " + str(tracks)),
        ([*match, "--out", other, "--unmatched", other], "--unmatched names the --out file"),
    ]:
        with pytest.raises(SystemExit) as usage:
            spotify_cli.main(argv)
        assert usage.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    assert tracks.read_bytes() == before and not (tmp_path / "m.csv").exists()


def test_unwritable_outputs_are_usage_errors_before_any_request(server, tmp_path, capsys):
    """Every file a subcommand writes is checked first: no login, request or scan, nothing
    written (match used to write --out, then fail on --unmatched with `[Errno 17]`)."""
    (tmp_path / "somefile.txt").write_text("x")
    (tmp_path / "music").mkdir()
    tracks = tmp_path / "tracks.csv"
    spotify_cli.write_csv(str(tracks), spotify_cli.TRACK_FIELDS, [])
    save_login(tmp_path / "token.json")
    good, bad = str(tmp_path / "token.json"), str(tmp_path / "somefile.txt" / "x.csv")
    under_file = f"cannot write {bad}: {tmp_path / 'somefile.txt'} is a file, not a folder"
    match = ["match", "--tracks", str(tracks), "--audio", str(tmp_path / "music")]
    cases = [
        (good, ["export-playlist", "big", "--auth", "client", "--out", bad], "--out"),
        (good, [*match, "--out", bad], "--out"),
        (good, [*match, "--out", str(tmp_path / "m.csv"), "--unmatched", bad], "--unmatched"),
        (bad, ["login", "--no-browser"], "--token-cache"),
        (bad, ["export-playlist", "big"], "--token-cache"),
        (bad, ["create-playlist", "--name", "x", "--from", str(tracks)], "--token-cache"),
    ]
    base = ["--api-url", f"{server.base}/v1/", "--accounts-url", server.base]
    folder = ["export-playlist", "big", "--out", str(tmp_path / "music")]
    for token_cache, argv, message in [
        *((token_cache, argv, f"{flag}: {under_file}") for token_cache, argv, flag in cases),
        (good, folder, f"--out: {tmp_path / 'music'} is a folder; name the file to write"),
    ]:
        with pytest.raises(SystemExit) as usage:
            spotify_cli.main([*base, "--token-cache", token_cache, *argv])
        assert usage.value.code == 2, argv
        out, err = capsys.readouterr()
        assert err.endswith(f" error: {message}\n"), argv
        assert_no_secret(out + err)  # a login is saved: its tokens must not show
    assert not server.log  # no token, no API call
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "music",
        "somefile.txt",
        "token.json",
        "tracks.csv",
    ]


def test_redaction_replaces_whole_secrets_not_letters_of_words():
    """A placeholder client id such as "x" used to turn every x of a message into
    [redacted] ('e[redacted]pected', 'myna_rpe_ja[redacted]')."""
    redactor = api.Redactor()
    redactor.install("x", CLIENT_SECRET)
    text = f"expected x in myna_rpe_jax.spotify (id=x, secret {CLIENT_SECRET}, 'x')"
    assert redactor.redact(text) == (
        "expected [redacted] in myna_rpe_jax.spotify (id=[redacted], secret [redacted],"
        " '[redacted]')"
    )


@pytest.mark.parametrize("wait", ["nan", "-5", "inf"])
def test_max_wait_must_be_a_number_of_seconds(wait, capsys):
    with pytest.raises(SystemExit) as exit_info:
        spotify_cli.main(["--max-wait", wait, "login", "--no-browser"])
    assert exit_info.value.code == 2
    assert "--max-wait must be a number of seconds >= 0" in capsys.readouterr().err
