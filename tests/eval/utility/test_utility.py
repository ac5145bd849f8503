"""Utility sets: the embedded VQA set, the answer parsers, and hub-style datasets read locally."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import datasets
import pytest
from PIL import Image

from calib.errors import ConfigError
from calib.types import Sample, UtilitySet
from eval.utility.base import ItemScore, NoUtility, score_responses, utility_rows, utility_summary
from eval.utility.grader import LLMGrader, parse_grade
from eval.utility.hf import HFUtility
from eval.utility.parse import parse_letter, parse_yes_no, score_exact
from eval.utility.sample import TASKS, SampleUtility

OPTIONS = ["Paris", "London", "Berlin", "Rome"]


# -- the embedded set -------------------------------------------------------------------------
def test_sample_set_is_deterministic_and_large_enough(tmp_path):
    first = SampleUtility(n_per_task=12, seed=0, cache_dir=str(tmp_path / "a")).items()
    second = SampleUtility(n_per_task=12, seed=0, cache_dir=str(tmp_path / "b")).items()
    assert len(first) >= 60
    assert len({s.id for s in first}) == len(first)
    assert {s.category for s in first} == set(TASKS)
    for a, b in zip(first, second, strict=True):
        assert (a.id, a.prompt, a.reference, a.meta) == (b.id, b.prompt, b.reference, b.meta)
        assert Path(a.image).read_bytes() == Path(b.image).read_bytes()
        assert str(tmp_path / "a" / "utility_images") in a.image
        assert a.label is None and a.condition == "exact"
        assert a.reference in a.meta["choices"]
    for task in TASKS:  # answers vary within a task: a constant answer cannot score well
        assert len({s.reference for s in first if s.category == task}) > 1


def test_sample_set_grows_by_appending(tmp_path):
    small = SampleUtility(n_per_task=3, seed=0, cache_dir=str(tmp_path)).items()
    large = SampleUtility(n_per_task=5, seed=0, cache_dir=str(tmp_path)).items()
    assert {(s.id, s.reference) for s in small} <= {(s.id, s.reference) for s in large}
    other_seed = SampleUtility(n_per_task=5, seed=1, cache_dir=str(tmp_path)).items()
    assert [s.prompt + s.reference for s in other_seed] != [s.prompt + s.reference for s in large]


def test_sample_images_are_rendered_once(tmp_path):
    items = SampleUtility(n_per_task=1, seed=0, cache_dir=str(tmp_path)).items()
    stamps = {s.image: Path(s.image).stat().st_mtime_ns for s in items}
    SampleUtility(n_per_task=1, seed=0, cache_dir=str(tmp_path)).items()
    assert stamps == {s.image: Path(s.image).stat().st_mtime_ns for s in items}
    with Image.open(items[0].image) as image:
        assert image.size == (336, 336)


def test_perfect_and_wrong_answers_score_one_and_zero(tmp_path):
    items = SampleUtility(n_per_task=2, seed=0, cache_dir=str(tmp_path)).items()
    perfect = [f"The answer is {s.reference}." for s in items]
    summary = utility_summary("sample", items, score_responses(items, perfect))
    assert summary["score"] == 1.0
    assert summary["by_task"] == {task: 1.0 for task in sorted(TASKS)}
    assert summary["n"] == len(items) and summary["n_unparsed"] == 0
    silent = ["I cannot help with that."] * len(items)
    scores = score_responses(items, silent)
    summary = utility_summary("sample", items, scores)
    assert summary["score"] == 0.0 and summary["n_unparsed"] == len(items)
    rows = utility_rows(items, silent, scores)
    assert rows[0]["reference"] == items[0].reference and rows[0]["score"] == 0.0


def test_no_utility_is_a_utility_set_without_items():
    none = NoUtility()
    assert isinstance(none, UtilitySet) and none.items() == [] and none.grader is None


# -- parsers on crafted answers ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("B", "B"),
        ("(B)", "B"),
        ("b", "B"),
        ("B.", "B"),
        ("c)", "C"),
        ("B. London", "B"),
        ("The answer is (b).", "B"),
        ("Answer: C", "C"),
        ("The correct option is D, Rome.", "D"),
        ("I think B is right.", "B"),
        ("A dog stands in the picture, so the answer is C.", "C"),
        ("A.", "A"),
        ("**C**", "C"),
        ("It is Paris.", "A"),
        ("Paris or London, hard to say", None),
        ("I am not sure.", None),
    ],
)
def test_letter_parser(response, letter):
    assert parse_letter(response, OPTIONS) == letter


def test_letter_parser_ignores_letters_beyond_the_options():
    assert parse_letter("E", OPTIONS) is None
    assert parse_letter("The answer is (C).", ["yes", "no"]) is None


@pytest.mark.parametrize(
    ("response", "answer"),
    [("Yes", "yes"), ("yes.", "yes"), ("No, there is not.", "no"), ("NO", "no"), ("Maybe", None)],
)
def test_yes_no_parser(response, answer):
    assert parse_yes_no(response) == answer


@pytest.mark.parametrize(
    ("response", "reference", "choices", "score"),
    [
        ("Red.", "red", ["red", "blue"], 1.0),
        ("It is a BLUE circle", "red", ["red", "blue"], 0.0),
        ("There are three triangles.", "3", [str(n) for n in range(11)], 1.0),
        ("3", "3", [str(n) for n in range(11)], 1.0),
        ("left, not right", "left", ["left", "right"], 1.0),
        ("The word is 'lamp'!", "lamp", ["cat", "lamp"], 1.0),
    ],
)
def test_exact_scorer(response, reference, choices, score):
    assert score_exact(response, reference, choices)[0] == score


# -- hub-style datasets, read from local folders ----------------------------------------------
def _picture(colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (12, 12), colour)


def _mmbench_folder(root: Path) -> Path:
    """A tiny MMBench look-alike as parquet data files, the layout of a hub dataset repo."""
    features = datasets.Features(
        {
            "index": datasets.Value("int64"),
            "question": datasets.Value("string"),
            "hint": datasets.Value("string"),
            "A": datasets.Value("string"),
            "B": datasets.Value("string"),
            "C": datasets.Value("string"),
            "D": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "category": datasets.Value("string"),
            "image": datasets.Image(),
        }
    )
    table = datasets.Dataset.from_dict(
        {
            "index": [10, 11, 12],
            "question": ["Which colour fills the image?", "What is shown?", "Which city?"],
            "hint": [None, "Look closely.", None],
            "A": ["red", "a dog", "Paris"],
            "B": ["blue", "a cat", "Rome"],
            "C": ["green", None, "Oslo"],
            "D": [None, None, "Bern"],
            "answer": ["A", "B", "D"],
            "category": ["colour", "animals", "places"],
            "image": [_picture((200, 0, 0)), _picture((0, 0, 0)), _picture((0, 90, 0))],
        },
        features=features,
    )
    folder = root / "mmbench"
    (folder / "data").mkdir(parents=True)
    table.to_parquet(str(folder / "data" / "dev-00000-of-00001.parquet"))
    return folder


def _hf_utility(tmp_path: Path, path: Path, **overrides) -> HFUtility:
    settings = {
        "name": "mmbench",
        "path": str(path),
        "subset": None,
        "split": "dev",
        "revision": None,
        "task": "multiple_choice",
        "fields": {
            "id": "index",
            "question": "question",
            "image": "image",
            "answer": "answer",
            "category": "category",
            "hint": "hint",
            "choices": None,
            "options": ["A", "B", "C", "D"],
        },
        "answer_format": "letter",
        "prompt_suffix": "Answer with the option's letter.",
        "limit": None,
        "seed": 0,
        "cache_dir": str(tmp_path / "cache"),
        "hf_cache_dir": str(tmp_path / "hf"),
    }
    return HFUtility(**{**settings, **overrides})


def test_multiple_choice_loader_on_a_local_dataset(tmp_path):
    items = _hf_utility(tmp_path, _mmbench_folder(tmp_path)).items()
    assert [s.reference for s in items] == ["A", "B", "D"]
    assert [len(s.meta["options"]) for s in items] == [3, 2, 4]  # blank options dropped
    first, second = items[0], items[1]
    assert first.prompt.splitlines() == [
        "Which colour fills the image?",
        "A. red",
        "B. blue",
        "C. green",
        "Answer with the option's letter.",
    ]
    assert second.prompt.startswith("Hint: Look closely.\nWhat is shown?")
    assert first.condition == "multiple_choice" and first.category == "colour"
    with Image.open(first.image) as image:
        assert image.getpixel((0, 0)) == (200, 0, 0)
    answers = ["(A)", "I believe it is b.", "Answer: C"]
    summary = utility_summary("mmbench", items, score_responses(items, answers))
    assert summary["score"] == pytest.approx(2 / 3)
    assert summary["by_task"] == {"animals": 1.0, "colour": 1.0, "places": 0.0}


def test_limit_takes_a_seeded_subset(tmp_path):
    folder = _mmbench_folder(tmp_path)
    first = [s.id for s in _hf_utility(tmp_path, folder, limit=2, seed=3).items()]
    again = [s.id for s in _hf_utility(tmp_path, folder, limit=2, seed=3).items()]
    assert first == again and len(first) == 2


def test_choices_list_with_index_answers_from_a_saved_dataset(tmp_path):
    """ScienceQA-IMG style: one list column of options, the answer a 0-based index."""
    table = datasets.Dataset.from_dict(
        {
            "question": ["Which is a mammal?"],
            "choices": [["trout", "whale", "crow"]],
            "answer": [1],
            "hint": [""],
            "subject": ["natural science"],
            "image": [_picture((1, 2, 3))],
        },
        features=datasets.Features(
            {
                "question": datasets.Value("string"),
                "choices": datasets.Sequence(datasets.Value("string")),
                "answer": datasets.Value("int8"),
                "hint": datasets.Value("string"),
                "subject": datasets.Value("string"),
                "image": datasets.Image(),
            }
        ),
    )
    table.save_to_disk(str(tmp_path / "sqa"))
    fields = {
        "id": None,
        "question": "question",
        "image": "image",
        "answer": "answer",
        "category": "subject",
        "hint": "hint",
        "choices": "choices",
        "options": None,
    }
    utility = _hf_utility(tmp_path, tmp_path / "sqa", fields=fields, answer_format="index")
    (item,) = utility.items()
    assert item.reference == "B" and item.meta["options"] == ["trout", "whale", "crow"]
    assert "Hint" not in item.prompt and "B. whale" in item.prompt


def test_yes_no_loader(tmp_path):
    table = datasets.Dataset.from_dict(
        {
            "question_id": ["pic.png", "pic.png"],
            "question": ["Is there a red square? Please answer yes or no."] * 2,
            "answer": ["Yes", "No"],
            "category": ["existence", "existence"],
            "image": [_picture((255, 0, 0))] * 2,
        },
        features=datasets.Features(
            {
                "question_id": datasets.Value("string"),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
                "category": datasets.Value("string"),
                "image": datasets.Image(),
            }
        ),
    )
    table.save_to_disk(str(tmp_path / "mme"))
    fields = {
        "id": "question_id",
        "question": "question",
        "image": "image",
        "answer": "answer",
        "category": "category",
    }
    utility = _hf_utility(
        tmp_path,
        tmp_path / "mme",
        name="mme",
        task="yes_no",
        fields=fields,
        prompt_suffix="",
        answer_format=None,
    )
    items = utility.items()
    assert [s.reference for s in items] == ["yes", "no"]
    assert len({s.id for s in items}) == 2 and items[0].image == items[1].image
    scores = score_responses(items, ["Yes, there is.", "Yes."])
    assert [s.score for s in scores] == [1.0, 0.0]


def test_wrong_field_names_are_reported_with_the_key(tmp_path):
    folder = _mmbench_folder(tmp_path)
    fields = {"id": "index", "question": "query", "image": "picture", "answer": "answer"}
    fields["options"] = ["A", "B"]
    with pytest.raises(ConfigError) as err:
        _hf_utility(tmp_path, folder, fields=fields).items()
    message = str(err.value)
    assert "utility.fields.question=query" in message and "utility.fields.image=picture" in message


def test_bad_settings_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as err:
        _hf_utility(tmp_path, tmp_path, task="essay", answer_format="roman", limit=0)
    assert len(err.value.problems) == 3


def test_open_items_need_a_grader():
    with pytest.raises(ConfigError, match=r"utility\.grader"):
        HFUtility(
            name="mmvet",
            path="x",
            subset=None,
            split="test",
            revision=None,
            task="open",
            fields={"question": "question", "image": "image", "answer": "answer"},
            prompt_suffix="",
            limit=None,
            seed=0,
            cache_dir="unused",
        )


def test_scores_keep_the_answer_they_parsed():
    """What was read from each response is kept beside its score (utility_responses.jsonl)."""
    item = Sample(
        id="mc/1",
        prompt="Which one?",
        image=None,
        label=None,
        category="demo",
        condition="multiple_choice",
        group="mc/1",
        reference="B",
        meta={"options": ["cat", "dog", "cow"]},
    )
    scores = score_responses([item, item, item], ["It is (B) dog.", "A", "no idea"])
    assert scores == [ItemScore(1.0, "B"), ItemScore(0.0, "A"), ItemScore(0.0, None)]


# -- open answers graded by an LLM endpoint (a real HTTP server on 127.0.0.1) -------------------
class _GradingHandler(BaseHTTPRequestHandler):
    """Grades like a strict teacher: 1 when the reference appears in the answer, else 0."""

    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _GradingHandler.requests.append({"body": body, "auth": self.headers.get("Authorization")})
        user = body["messages"][-1]["content"]
        reference = re.search(r"Reference answer: (.*)", user).group(1)
        answer = re.search(r"Model answer: (.*)", user).group(1)
        if "confuse" in answer:
            reply = "I would rather not say."
        else:
            reply = "Score: 1.0" if reference.lower() in answer.lower() else "0.0"
        payload = json.dumps({"choices": [{"message": {"content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def grading_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _GradingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _GradingHandler.requests = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _grader(base_url: str, cache_dir: Path | None) -> LLMGrader:
    return LLMGrader(
        base_url=base_url,
        model="grader",
        api_key_env="VSC_CALIB_TEST_GRADER_KEY",
        cache_dir=str(cache_dir) if cache_dir else None,
        concurrency=2,
        timeout_s=10.0,
        max_retries=0,
        backoff_s=0.0,
        max_backoff_s=0.0,
        max_tokens=8,
    )


def test_open_answers_are_graded_through_the_endpoint(tmp_path, grading_server, monkeypatch):
    monkeypatch.setenv("VSC_CALIB_TEST_GRADER_KEY", "sk-grader-test-key")
    table = datasets.Dataset.from_dict(
        {
            "question_id": ["v1", "v2", "v3", "v4"],
            "question": ["What animal is this?", "What is written?", "How many?", "Colour?"],
            "answer": ["cat", "STOP", "4", "red"],
            "capability": [["rec"], ["ocr"], ["rec", "math"], ["rec"]],
            "image": [_picture((9, 9, 9))] * 4,
        },
        features=datasets.Features(
            {
                "question_id": datasets.Value("string"),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
                "capability": datasets.Sequence(datasets.Value("string")),
                "image": datasets.Image(),
            }
        ),
    )
    table.save_to_disk(str(tmp_path / "mmvet"))
    fields = {"id": "question_id", "question": "question", "image": "image", "answer": "answer"}
    fields["category"] = "capability"
    utility = _hf_utility(
        tmp_path,
        tmp_path / "mmvet",
        name="mmvet",
        task="open",
        fields=fields,
        prompt_suffix="",
        answer_format=None,
        grader=_grader(grading_server, tmp_path / "grades"),
    )
    items = utility.items()
    assert [s.category for s in items] == ["rec", "ocr", "rec+math", "rec"]
    responses = ["It is a cat.", "It says GO.", "you confuse me", ""]
    scores = score_responses(items, responses, utility.grader)
    assert [s.score for s in scores] == [1.0, 0.0, None, 0.0]  # unparsable reply: ungraded
    summary = utility_summary("mmvet", items, scores)
    assert summary["n_ungraded"] == 1 and summary["score"] == pytest.approx(1 / 3)
    assert len(_GradingHandler.requests) == 3  # the empty answer is not sent
    assert {r["auth"] for r in _GradingHandler.requests} == {"Bearer sk-grader-test-key"}
    # A re-run is served by the reply cache, except the reply without a score: it was not
    # stored, so the next run asks again (and could get a grade).
    again = score_responses(items, responses, utility.grader)
    assert again == scores and len(_GradingHandler.requests) == 4
    assert "you confuse me" in _GradingHandler.requests[-1]["body"]["messages"][-1]["content"]


def test_grade_parser():
    assert parse_grade("0.5") == 0.5
    assert parse_grade("Score: 1") == 1.0
    assert parse_grade("1.0 - correct") == 1.0
    assert parse_grade("7 out of 10") is None
    assert parse_grade("no idea") is None


def test_grader_without_its_key_names_the_variable(monkeypatch):
    monkeypatch.delenv("VSC_CALIB_TEST_GRADER_KEY", raising=False)
    with pytest.raises(ConfigError, match="VSC_CALIB_TEST_GRADER_KEY"):
        _grader("http://127.0.0.1:9/v1", None)
