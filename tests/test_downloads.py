"""A cloud image URL is downloaded at set-up (with a timeout and an optional checksum), never by the program."""

from __future__ import annotations

import hashlib

import pytest

from components.image import ImageMissing, resolve_image
from hypervisor import downloads
from hypervisor.progress import StepFailed
from tests.conftest import spec_of


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("L2DSR_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_the_program_never_downloads_it_names_the_command(cache):
    spec = spec_of({"image": "https://example.invalid/debian.qcow2"})
    with pytest.raises(ImageMissing, match=r"l2dsr:image: .* not downloaded yet: run ./labctl fetch"):
        resolve_image(spec)
    downloads.download_path(spec.image).parent.mkdir(parents=True)
    downloads.download_path(spec.image).write_bytes(b"qcow2")
    assert resolve_image(spec).path == str(downloads.download_path(spec.image))


def test_fetch_checks_the_checksum_and_keeps_only_a_good_file(cache):
    source = cache / "image.qcow2"
    source.write_bytes(b"an image")
    url = source.as_uri()
    good = hashlib.sha256(b"an image").hexdigest()
    with pytest.raises(StepFailed, match="l2dsr:imageSha256: .* not " + "0" * 64):
        downloads.fetch(url, "0" * 64)
    assert not downloads.download_path(url).exists()  # a file that failed its check is not kept
    assert downloads.fetch(url, good).read_bytes() == b"an image"
    assert downloads.fetch(url).read_bytes() == b"an image"  # cached: not fetched again


def test_a_failed_download_names_the_key_and_leaves_nothing(cache):
    url = (cache / "missing.qcow2").as_uri()
    with pytest.raises(StepFailed, match="l2dsr:image: cannot download"):
        downloads.fetch(url)
    assert list((cache / "cache" / "downloads").iterdir()) == []


def test_up_fetches_the_stacks_url_and_nothing_for_the_builtin_image(cache):
    (cache / "Pulumi.s.yaml").write_text("config:\n  l2dsr:mode: dsr\n")
    assert downloads.fetch_for_stack("s", cache) is None
