"""Which file extensions count as audio: one list for embedding, datasets and Spotify matching.

Dependency-free on purpose, so light tools (the Spotify CLI) share it without importing the
decoders in `audio`.
"""

# Extensions libsndfile decodes itself; anything else goes through librosa/audioread.
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64"}
)
# Every extension treated as audio: the rest need audioread/ffmpeg (AudioError without it).
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS | {".m4a", ".mp4", ".aac", ".wma"}
