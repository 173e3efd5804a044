"""Failure classification from the exceptions yt-dlp raises, and the circuit breaker."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from yt_dlp.networking import Response
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, UnsupportedError

from action_recognition.config import DownloadConfig
from action_recognition.download import CircuitBreaker, build_ydl_options, classify, js_support
from action_recognition.errors import ConfigError


def _wrap(exc: BaseException, message: str | None = None) -> DownloadError:
    return DownloadError(message or f"ERROR: {exc}", (type(exc), exc, None))


def _http(status: int) -> HTTPError:
    import io

    return HTTPError(Response(io.BytesIO(b""), "http://x", {}, status=status))


@pytest.mark.parametrize(
    ("exc", "state", "transient"),
    [
        (_wrap(_http(429)), "rate_limited", True),
        (_wrap(_http(503)), "retries_exhausted", True),
        (_wrap(_http(404)), "unavailable", False),
        (_wrap(_http(410)), "unavailable", False),
        (_wrap(TransportError("Connection refused")), "retries_exhausted", True),
        (_wrap(UnsupportedError("http://x")), "unavailable", False),
        (
            _wrap(GeoRestrictedError("The uploader has not made this video available in your country")),
            "geo_blocked",
            False,
        ),
        (_wrap(ExtractorError("Private video. Sign in if you've been granted access")), "private", False),
        (_wrap(ExtractorError("This video has been removed by the uploader")), "removed", False),
        (_wrap(ExtractorError("Video unavailable")), "unavailable", False),
        (_wrap(ExtractorError("Sign in to confirm your age")), "unavailable", False),
        (_wrap(ExtractorError("Sign in to confirm you\u2019re not a bot")), "rate_limited", True),
        (_wrap(ExtractorError("Requested format is not available")), "unavailable", False),
    ],
)
def test_classify(exc: BaseException, state: str, transient: bool) -> None:
    failure = classify(exc)
    assert failure.state == state
    assert failure.transient is transient
    assert failure.reason


def test_breaker_counts_consecutive_rate_limits() -> None:
    breaker = CircuitBreaker(3)
    for flag in (True, True, False, True, True):
        breaker.record(flag)
    assert not breaker.open
    breaker.record(True)
    assert breaker.open


def test_ydl_options_are_hardened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    opts = build_ydl_options(DownloadConfig(), tmp_path, (1.0, 11.0))
    assert opts["outtmpl"] == {"default": str(tmp_path / "media.%(ext)s")}
    assert opts["postprocessors"] == []
    assert "exec_cmd" not in opts and "progress_hooks" not in opts and "post_hooks" not in opts
    assert opts["allowed_extractors"] == ["youtube", "generic"]
    assert opts["force_keyframes_at_cuts"] is True
    assert "[height<=360]" in opts["format"]


@pytest.mark.parametrize(
    "template",
    [
        "https://x/{id}",
        "https://x/{youtube_id}/{youtube_id}",
        "file:///{youtube_id}",
        "https://x/{youtube_id.__class__}",
    ],
)
def test_url_template_is_checked(template: str) -> None:
    from action_recognition.config import load_config

    with pytest.raises(ConfigError, match=r"download\.url_template"):
        load_config(environ={}, extra={"download": {"url_template": template}})


def test_yt_dlp_gets_the_javascript_runtime_by_path_and_no_remote_scripts(tmp_path) -> None:  # type: ignore[no-untyped-def]
    opts = build_ydl_options(DownloadConfig(), tmp_path, None)
    deno = opts["js_runtimes"]["deno"]["path"]
    assert Path(deno).is_file() and Path(deno).parent == Path(sys.executable).parent, (
        "the venv's deno, by path"
    )
    assert opts["remote_components"] == [], "EJS scripts from the installed package, never fetched"


def test_yt_dlp_as_configured_finds_deno_and_the_ejs_scripts_without_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What YouTube needs since yt-dlp 2025.11 (else only storyboards come back), checked offline with an
    empty PATH: no runner may depend on a deno that happens to be on PATH."""
    monkeypatch.setenv("PATH", "")
    found = js_support()
    assert found["ok"], found
    assert found["runtime"] == "deno" and found["runtime_version"] and found["ejs"], found
