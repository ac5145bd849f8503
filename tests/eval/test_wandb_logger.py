"""W&B logger: a real offline run, read back from the files it wrote; secrets never land on disk."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from calib.types import RunLogger
from eval.loggers import REDACTED, NullLogger, WandbLogger, redact, secret_values
from tests.conftest import TINY_RUN

WANDB_KEY = "wandbkey-0123456789abcdef0123456789abcdef"
JUDGE_KEY = "sk-judge-secret-4f9a1c77e2"
BLOCK = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks


def wandb_records(path: Path) -> Iterator:
    """The protobuf records of a ``run-<id>.wandb`` file (header, then framed chunks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        if left < 7:  # block trailer padding
            position += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 2):  # full record, or first chunk of one
            pending = chunk
        elif kind in (3, 4):  # middle or last chunk
            pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def summary_of(records: list) -> dict[str, object]:
    summary: dict[str, object] = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                key = item.key or ".".join(item.nested_key)
                summary[key] = json.loads(item.value_json)
    return summary


@pytest.fixture
def wandb_env(tmp_path, monkeypatch) -> Path:
    """Offline W&B with every folder it writes (run, artifacts staging, cache) under tmp_path."""
    home = tmp_path / "wandb_home"
    for var, sub in (
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("VSC_CALIB_JUDGE_API_KEY", JUDGE_KEY)
    monkeypatch.setenv("WANDB_SILENT", "true")
    return tmp_path


def _logger(root: Path, max_rows: int = 3) -> WandbLogger:
    return WandbLogger(
        project="vsc-calib-test",
        entity=None,
        mode="offline",
        group="sweep-1",
        tags=["extra"],
        dir=str(root / "outputs"),
        max_table_rows=max_rows,
        log_artifacts=True,
    )


def test_offline_run_holds_summary_table_plots_artifact_and_no_secret(wandb_env):
    root = wandb_env
    images = []
    for i in range(5):
        path = root / f"img{i}.png"
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(path)
        images.append(str(path))
    rows = [
        {"id": f"s{i}", "image": images[i], "prompt": "q", "response": "r", "judge": "REFUSE"}
        for i in range(5)
    ]
    method_dir = root / "run" / "method"
    method_dir.mkdir(parents=True)
    (method_dir / "vector.pt").write_bytes(b"\x00" * 16)
    config = {
        "judge": {"api_key": JUDGE_KEY, "api_key_env": "VSC_CALIB_JUDGE_API_KEY"},
        "endpoint": f"http://127.0.0.1:9/v1?key={JUDGE_KEY}",
        "seed": 0,
    }

    logger = _logger(root)
    logger.start(config, root / "run", name="0_none", tags=["tiny", "none"])
    try:
        logger.log_summary({"safety.sra_u": 0.5, "safety.mean": 0.625, "utility.score": 0.25})
        logger.log_table("responses", rows)
        logger.log_images({"plots/by_category": images[0]})
        logger.log_file(method_dir, kind="steering")
    finally:
        logger.finish()

    (run_dir,) = (root / "outputs" / "wandb").glob("offline-run-*")
    records = list(wandb_records(next(run_dir.glob("run-*.wandb"))))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "0_none" and run.run_group == "sweep-1"
    assert set(run.tags) == {"tiny", "none", "extra"}
    sent_config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert sent_config["judge"] == {"api_key": REDACTED, "api_key_env": "VSC_CALIB_JUDGE_API_KEY"}
    assert JUDGE_KEY not in sent_config["endpoint"]

    summary = summary_of(records)
    assert summary["safety.sra_u"] == 0.5 and summary["utility.score"] == 0.25
    assert summary["responses.nrows"] == 3  # capped at max_table_rows
    table_file = run_dir / "files" / summary["responses.path"]
    table = json.loads(table_file.read_text())
    assert table["columns"] == ["id", "image", "prompt", "response", "judge"]
    assert [row[0] for row in table["data"]] == ["s0", "s1", "s2"]
    assert summary["plots/by_category.format"] == "png"
    assert (run_dir / "files" / summary["plots/by_category.path"]).is_file()
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    kinds = {a.type: a for a in artifacts}
    assert "steering" in kinds
    assert [c.path for c in kinds["steering"].manifest.contents] == ["vector.pt"]
    table_images = [c.path for c in kinds["run_table"].manifest.contents if c.path.endswith(".png")]
    assert len(table_images) == 3  # the table's images travel with it

    written = [p for p in root.rglob("*") if p.is_file() and "img" not in p.name]
    assert any(p.suffix == ".wandb" for p in written)
    for path in written:
        content = path.read_bytes()
        for secret in (WANDB_KEY, JUDGE_KEY):
            assert secret.encode() not in content, f"{secret[:8]}... written to {path}"


def test_each_job_gets_its_own_run(wandb_env):
    for name in ("0_none", "1_prompting"):
        logger = _logger(wandb_env)
        logger.start({"seed": 0}, wandb_env / name, name=name, tags=["tiny", name[2:]])
        try:
            logger.log_summary({"safety.mean": 0.5})
        finally:
            logger.finish()
    assert len(list((wandb_env / "outputs" / "wandb").glob("offline-run-*"))) == 2


def test_table_cap_of_zero_logs_no_table(wandb_env):
    logger = _logger(wandb_env, max_rows=0)
    logger.start({}, wandb_env / "run", name="r", tags=["tiny", "none"])
    try:
        logger.log_table("responses", [{"id": "a"}])
    finally:
        logger.finish()
    (run_dir,) = (wandb_env / "outputs" / "wandb").glob("offline-run-*")
    summary = summary_of(list(wandb_records(next(run_dir.glob("run-*.wandb")))))
    assert not any(key.startswith("responses") for key in summary)


def test_redact_by_key_and_by_environment_value():
    secrets = secret_values({"OPENAI_API_KEY": "sk-abcdefgh1234", "HOME": "/root", "X_TOKEN": "ab"})
    assert secrets == ["sk-abcdefgh1234"]  # short values are not treated as secrets
    config = {"judge": {"token": "t0ps3cret!", "url": "https://h/?k=sk-abcdefgh1234"}, "n": [1]}
    assert redact(config, secrets) == {
        "judge": {"token": REDACTED, "url": f"https://h/?k={REDACTED}"},
        "n": [1],
    }


def test_null_logger_is_a_run_logger_that_writes_nothing(tmp_path):
    logger = NullLogger()
    assert isinstance(logger, RunLogger)
    calls = [
        logger.start({}, tmp_path, name="x", tags=[]),
        logger.log_summary({"a": 1}),
        logger.log_table("t", [{"a": 1}]),
        logger.log_images({"p": tmp_path / "none.png"}),
        logger.log_file(tmp_path, kind="adapter"),
        logger.finish(),
    ]
    assert calls == [None] * 6
    assert list(tmp_path.iterdir()) == [], "logger=none leaves the run folder to the run"


def test_bad_settings_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"logger\.mode=cloud"):
        WandbLogger("p", None, "cloud", None, [], str(tmp_path), 10, True)
    with pytest.raises(ValueError, match=r"logger\.max_table_rows=-1"):
        WandbLogger("p", None, "offline", None, [], str(tmp_path), -1, True)


@pytest.mark.slow
def test_a_run_with_logger_wandb_logs_metrics_tables_plots_and_the_method(wandb_env):

    from calib.cli.common import compose_config
    from calib.pipeline import run

    overrides = [
        "method=prompting",
        "logger=wandb",
        f"logger.dir={wandb_env / 'outputs'}",
        f"paths.cache_dir={wandb_env / 'cache'}",
        "generation.max_new_tokens=4",
        "metrics.n_boot=0",
        "data.limit=8",
        "utility.n_per_task=1",
    ]
    cfg = compose_config(overrides=[*TINY_RUN, *overrides])
    metrics = run(cfg, wandb_env / "run")

    (run_dir,) = (wandb_env / "outputs" / "wandb").glob("offline-run-*")
    records = list(wandb_records(next(run_dir.glob("run-*.wandb"))))
    summary = summary_of(records)
    assert summary["safety.mean"] == metrics["safety"]["mean"]
    assert summary["utility.score"] == metrics["utility"]["score"]
    assert summary["deltas.baseline.cached"] == metrics["deltas"]["baseline"]["cached"]
    assert summary["responses.nrows"] == metrics["run"]["n_evaluation"]
    assert summary["utility.nrows"] == metrics["utility"]["n"]
    assert summary["plots/sra_tradeoff.format"] == "png"
    artifacts = {r.artifact.type for r in records if r.WhichOneof("record_type") == "artifact"}
    assert metrics["run"]["method"] in artifacts  # the method's folder (its instruction)
    for path in (p for p in wandb_env.rglob("*") if p.is_file()):
        assert WANDB_KEY.encode() not in path.read_bytes(), path
