"""The generation cache: keys, storage, concurrent writers, and the calib-cache command."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from calib.cli.cache import main
from calib.generation.cache import CACHE_FILE, Entry, GenerationCache, generation_key
from calib.generation.generate import key_decoding

GREEDY = {"max_new_tokens": 8, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "seed": 0}


@pytest.fixture
def two_images(tmp_path) -> tuple[Path, Path, Path]:
    """Two different pictures, and a copy of the first under another name."""
    first, second, copy = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "a_copy.png"
    Image.new("RGB", (8, 8), "red").save(first)
    Image.new("RGB", (8, 8), "blue").save(second)
    copy.write_bytes(first.read_bytes())
    return first, second, copy


def key(**changes) -> str:
    parts = {
        "model": "local:abc|float32",
        "method": "none",
        "rendered": "USER: <image> hello\nASSISTANT:",
        "images": [],
        "decoding": key_decoding(GREEDY),
    }
    return generation_key(**{**parts, **changes})


def test_key_is_stable_and_changes_with_each_part(two_images):
    first, second, copy = two_images
    base = key(images=[str(first)])
    assert key(images=[str(first)]) == base
    assert key(images=[str(copy)]) == base, "same bytes under another path: same key"
    variants = {
        "model": key(images=[str(first)], model="local:abd|float32"),
        "dtype": key(images=[str(first)], model="local:abc|bfloat16"),
        "method": key(images=[str(first)], method="prompting:1234"),
        "rendered": key(images=[str(first)], rendered="USER: <image> hello!\nASSISTANT:"),
        "image bytes": key(images=[str(second)]),
        "no image": key(images=[]),
        "decoding": key(
            images=[str(first)], decoding=key_decoding({**GREEDY, "max_new_tokens": 9})
        ),
    }
    for part, changed in variants.items():
        assert changed != base, f"changing the {part} must change the key"
    assert len(set(variants.values())) == len(variants)


def test_pil_images_key_by_pixels():
    red = Image.new("RGB", (8, 8), "red")
    assert key(images=[red]) == key(images=[red.copy()])
    assert key(images=[red]) != key(images=[Image.new("RGB", (8, 8), "blue")])


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.png"):
        key(images=[str(tmp_path / "nope.png")])


def test_greedy_keys_ignore_sampling_settings_but_sampling_keys_do_not():
    greedy_other_seed = key_decoding({**GREEDY, "seed": 7, "temperature": 0.3})
    assert key(decoding=greedy_other_seed) == key()
    sampling = {**GREEDY, "do_sample": True}
    assert key(decoding=key_decoding(sampling)) != key()
    assert key(decoding=key_decoding({**sampling, "seed": 1})) != key(
        decoding=key_decoding(sampling)
    )


def test_put_get_stats_and_clear(tmp_path):
    with GenerationCache.in_dir(tmp_path) as cache:
        assert cache.get_many(["k1"]) == {}
        cache.put_many([Entry("k1", "one", "m", "none", "s1"), Entry("k2", "two", "m", "p:1")])
        cache.put_many([Entry("k3", "three", "n", "none")])
        assert cache.get_many(["k1", "k2", "k9", "k1"]) == {"k1": "one", "k2": "two"}
        stats = cache.stats()
        assert stats["rows"] == 3 and stats["bytes"] > 0
        assert {(g["model"], g["method"], g["rows"]) for g in stats["groups"]} == {
            ("m", "none", 1),
            ("m", "p:1", 1),
            ("n", "none", 1),
        }
        assert cache.clear(method="none", model="m") == 1
        assert cache.count() == 2
        assert cache.clear() == 2
        assert cache.count() == 0
    mode = sqlite3.connect(tmp_path / CACHE_FILE).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_many_keys_at_once(tmp_path):
    """Lookups of more keys than SQLite allows in one statement are chunked."""
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many(Entry(f"k{i}", str(i), "m", "none") for i in range(1234))
        found = cache.get_many([f"k{i}" for i in range(0, 1300)])
    assert len(found) == 1234 and found["k1000"] == "1000"


WRITER = textwrap.dedent(
    """
    import sys
    from calib.generation.cache import Entry, GenerationCache
    path, worker = sys.argv[1], int(sys.argv[2])
    cache = GenerationCache(path)
    for batch in range(60):
        # half the keys are shared by both writers, half are the worker's own
        cache.put_many(
            [Entry(f"shared-{batch}-{i}", f"shared {batch} {i}", "m", "none") for i in range(4)]
            + [Entry(f"w{worker}-{batch}-{i}", f"{worker} {batch} {i}", "m", "n") for i in range(4)]
        )
        assert len(cache.get_many([f"w{worker}-{batch}-0", f"shared-{batch}-0"])) == 2
    cache.close()
    """
)


def test_concurrent_writers_do_not_corrupt(tmp_path):
    path = tmp_path / CACHE_FILE
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(worker)], stderr=subprocess.PIPE
        )
        for worker in range(3)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()[-2000:]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("SELECT COUNT(*) FROM generations").fetchone()[0] == 60 * 4 + 3 * 60 * 4
    row = conn.execute("SELECT response FROM generations WHERE key = 'w2-59-3'").fetchone()
    assert row == ("2 59 3",)


def test_command_line_stats_and_clear(tmp_path, capsys):
    assert main(["stats", "--cache-dir", str(tmp_path)]) == 0
    assert "no generation cache" in capsys.readouterr().out
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many([Entry("k1", "one", "local:abc|float32", "none")])
        cache.put_many([Entry("k2", "two", "local:abc|float32", "prompting:9")])
    assert main(["stats", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 generation(s)" in out and "prompting:9" in out
    assert main(["clear", "--cache-dir", str(tmp_path), "--method", "none"]) == 0
    assert "deleted 1" in capsys.readouterr().out
    assert main(["clear", "--cache-dir", str(tmp_path)]) == 0
    assert "deleted 1" in capsys.readouterr().out


def test_clear_by_identity_matches_every_dtype_of_that_model(tmp_path):
    """`calib-cache clear --model <run.model_identity>` finds rows keyed `<identity>|<dtype>`."""
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many(
            [
                Entry("k1", "a", "local:abc|float32", "none"),
                Entry("k2", "b", "local:abc|bfloat16", "none"),
                Entry("k3", "c", "local:abcd|float32", "none"),
            ]
        )
        assert cache.clear(model="local:abc") == 2
        assert cache.get_many(["k3"]) == {"k3": "c"}
        assert cache.clear(model="local:abcd|float32") == 1
