"""A stem set's folder lock: publishing a set and recording a preview in it never interleave,
and a preview mixed from stems that a render replaced meanwhile is refused, not recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridge.atomic import folder_lock
from bridge.errors import InputError
from bridge.manifest import read_manifest
from bridge.pipeline import EngineSettings, SeparationRequest, Separator
from bridge.preview.stemset import open_stem_set, preview_path, read_stem, write_preview

fcntl = pytest.importorskip("fcntl")

HOLDER = """
import sys
from pathlib import Path
from bridge.atomic import folder_lock
with folder_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.readline()
"""


def test_the_lock_excludes_another_process(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        fd = os.open(tmp_path, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.communicate("\n", timeout=30)          # the holder lets go and exits
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # now free
        finally:
            os.close(fd)
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path):   # and usable again in this process
        pass


def test_a_preview_of_replaced_stems_is_refused_and_the_new_set_stays_clean(tmp_path: Path, model_repo: Path,
                                                                            make_clip) -> None:
    separator = Separator(EngineSettings(device="cpu", model_repo=model_repo, cache_dir=tmp_path / "cache"))
    clip = make_clip("song.wav", seconds=2.0, seed=1)
    out = tmp_path / "out"
    first = separator.run(SeparationRequest(clip, out, quality="preview", model="htdemucs"))
    old_set = open_stem_set(first)
    old_mix = sum(read_stem(old_set, name) for name in old_set.files)

    def mixed_while_a_render_replaces_the_set():
        # The render publishes (under the folder's lock) after the preview read its stems and
        # before it records itself: the order a real daemon can produce.
        separator.run(SeparationRequest(clip, out, quality="render", model="htdemucs"))
        yield old_mix.astype(np.float32)

    with pytest.raises(InputError, match="replaced while the preview rendered"):
        write_preview(old_set, mixed_while_a_render_replaces_the_set())
    manifest = read_manifest(first)
    assert manifest["quality"] == "render" and manifest["preview"] is None
    assert not preview_path(old_set).exists()
    assert [p.name for p in first.parent.iterdir() if ".stembridge-tmp" in p.name] == []
    # Asked again, the preview is mixed from the new stems and recorded.
    new_set = open_stem_set(first)
    path = write_preview(new_set, [sum(read_stem(new_set, name) for name in new_set.files).astype(np.float32)])
    assert read_manifest(first)["preview"] == path.name
