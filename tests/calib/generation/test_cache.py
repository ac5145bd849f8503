"""The generation cache: keys, storage, concurrent writers, and the calib-cache command."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from calib.cli.cache import main
from calib.errors import ConfigError, DataError
from calib.generation.cache import (
    CACHE_DIR,
    LEGACY_FILE,
    Entry,
    GenerationCache,
    generation_key,
)
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
        assert stats["shards"] == 1 and stats["live_shards"] == 1, "this process's own shard"
        assert {(g["model"], g["method"], g["rows"]) for g in stats["groups"]} == {
            ("m", "none", 1),
            ("m", "p:1", 1),
            ("n", "none", 1),
        }
    with GenerationCache.in_dir(tmp_path) as cache:  # the writer has finished: clear may edit
        assert cache.clear(method="none", model="m") == 1
        assert cache.count() == 2
        assert cache.clear() == 2
        assert cache.count() == 0
    assert not list((tmp_path / CACHE_DIR).glob("*.jsonl"))


def test_many_keys_at_once(tmp_path):
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many(Entry(f"k{i}", str(i), "m", "none") for i in range(1234))
        found = cache.get_many([f"k{i}" for i in range(0, 1300)])
    assert len(found) == 1234 and found["k1000"] == "1000"


WRITER = textwrap.dedent(
    """
    import sys, time
    from calib.generation.cache import Entry, GenerationCache
    cache_dir, worker, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cache = GenerationCache.in_dir(cache_dir)
    for batch in range(60):
        # half the keys are shared by every writer, half are the worker's own
        cache.put_many(
            [Entry(f"shared-{batch}-{i}", f"shared {batch} {i}", "m", "none") for i in range(4)]
            + [Entry(f"w{worker}-{batch}-{i}", f"{worker} {batch} {i}", "m", "n") for i in range(4)]
        )
        assert len(cache.get_many([f"w{worker}-{batch}-0", f"shared-{batch}-0"])) == 2
    # every job reads every other job's shard: wait until all have committed everything
    keys = [f"w{w}-59-3" for w in range(workers)]
    deadline = time.monotonic() + 120
    while len(cache.get_many(keys)) < workers:
        assert time.monotonic() < deadline, "another writer's rows never became visible"
        time.sleep(0.05)
    cache.close()
    """
)


def test_concurrent_writers_each_write_their_own_shard_and_read_all(tmp_path):
    workers = 3
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), str(worker), str(workers)],
            stderr=subprocess.PIPE,
        )
        for worker in range(workers)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err.decode()[-2000:]
    shards = sorted((tmp_path / CACHE_DIR).glob("*.jsonl"))
    assert len(shards) == workers, "one file per writer"
    assert not list((tmp_path / CACHE_DIR).glob("*.lock")), "finished writers leave no lock"
    with GenerationCache.in_dir(tmp_path) as cache:
        assert cache.count() == 60 * 4 + workers * 60 * 4
        assert cache.get_many(["w2-59-3"]) == {"w2-59-3": "2 59 3"}
        done = cache.compact()
        assert done == {"shards": workers, "entries": 60 * 4 + workers * 60 * 4, "imported": 0}
        assert len(list((tmp_path / CACHE_DIR).glob("*.jsonl"))) == 1
        assert cache.count() == 60 * 4 + workers * 60 * 4, "compaction loses nothing"


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from calib.generation.cache import Entry, GenerationCache
    cache = GenerationCache.in_dir(sys.argv[1])
    batch = 0
    while True:  # big batches: a kill lands inside a write sooner or later
        cache.put_many(Entry(f"b{batch}-{i}", "x" * 20000, "m", "none") for i in range(50))
        print(batch, flush=True)
        batch += 1
    """
)


def test_a_writer_killed_mid_write_loses_only_its_last_batch(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    for _ in range(5):  # five batches reported committed
        assert process.stdout.readline()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    shard = next((tmp_path / CACHE_DIR).glob("*.jsonl"))
    # Whether or not the kill landed inside a write, make the last line a torn one, as a
    # kill inside os.write leaves it (the file may end anywhere).
    data = shard.read_bytes()
    shard.write_bytes(data + b'{"k": "torn", "r": "xxxxxxx')
    with GenerationCache.in_dir(tmp_path) as cache:
        count = cache.count()
        assert count >= 5 * 50 and count % 50 == 0, "whole batches only"
        assert "torn" not in cache.get_many(["torn"])
        stats = cache.stats()
        assert stats["live_shards"] == 0, "a dead writer's lock is recognised as stale"
        assert cache.compact()["entries"] == count
        cache.put_many([Entry("after", "resumed", "m", "none")])
    with GenerationCache.in_dir(tmp_path) as cache:
        assert cache.count() == count + 1


def test_a_damaged_shard_is_named_and_the_rest_is_used(tmp_path, caplog):
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many([Entry("k1", "one", "m", "none")])
    garbage = tmp_path / CACHE_DIR / "other-1-deadbeef.jsonl"
    garbage.write_bytes(bytes(range(11, 256)) * 8 + b"\n" + b"not json\n")
    with GenerationCache.in_dir(tmp_path) as cache:
        assert cache.get_many(["k1"]) == {"k1": "one"}
        assert "other-1-deadbeef.jsonl" in caplog.text and "mv " in caplog.text
        assert cache.stats()["unreadable_lines"] == {garbage.name: 2}


def test_an_old_sqlite_cache_is_imported_by_compact(tmp_path):
    conn = sqlite3.connect(tmp_path / LEGACY_FILE)
    conn.execute(
        "CREATE TABLE generations (key TEXT PRIMARY KEY, response TEXT NOT NULL, model TEXT "
        "NOT NULL, method TEXT NOT NULL, sample_id TEXT, created REAL NOT NULL)"
    )
    conn.execute("INSERT INTO generations VALUES ('old', 'kept', 'm', 'none', 's', 1.0)")
    conn.commit()
    conn.close()
    with GenerationCache.in_dir(tmp_path) as cache:
        assert cache.stats()["legacy"] is not None
        assert cache.compact()["imported"] == 1
        assert cache.get_many(["old"]) == {"old": "kept"}
    assert not (tmp_path / LEGACY_FILE).exists()


def test_a_damaged_old_sqlite_cache_is_named(tmp_path):
    (tmp_path / LEGACY_FILE).write_bytes(b"this is not a database" * 100)
    with GenerationCache.in_dir(tmp_path) as cache, pytest.raises(DataError, match="mv "):
        cache.compact()


def test_an_unwritable_cache_folder_names_the_key_and_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=r"paths\.cache_dir.*cache\.enabled=false"):
        GenerationCache.in_dir(blocker).check_writable()


def test_command_line_stats_clear_and_compact(tmp_path, capsys):
    assert main(["stats", "--cache-dir", str(tmp_path)]) == 0
    assert "no generation cache" in capsys.readouterr().out
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many([Entry("k1", "one", "local:abc|float32", "none")])
    with GenerationCache.in_dir(tmp_path) as cache:
        cache.put_many([Entry("k2", "two", "local:abc|float32", "prompting:9")])
    assert main(["stats", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 generation(s) in 2 shard(s)" in out and "prompting:9" in out
    assert main(["compact", "--cache-dir", str(tmp_path)]) == 0
    assert "merged 2 shard(s) into one: 2 generation(s)" in capsys.readouterr().out
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
