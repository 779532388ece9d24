"""``translate`` n-best, scores, JSON lines, sampling and over-long inputs, and ``score``, through
the CLI on one small trained toy run."""

from __future__ import annotations

import io
import json
import logging
import math

import pytest
import yaml

from tests.shared_runs import TOY_MAX_LENGTH
from transformer_tf.cli import main

# The commands load the shared run once per set of arguments (tests/shared_runs.py): the same
# model object, whose traced decoders later commands reuse.
pytestmark = pytest.mark.usefixtures("load_each_run_once")

MAX_LENGTH = TOY_MAX_LENGTH  # data.max_length: sources keep 15 words
SENTENCES = ["the big dog sees a cat", "we love the old tree", "my cat fetches the red house"]
LONG = " ".join(["the old dog sees a cat"] * 4)  # 24 words


@pytest.fixture(scope="module")
def toy_run(request):
    """The shared toy run (tests/shared_runs.py), trained for 60 steps with data.max_length 16
    and decoding.beam_size 3 (the n-best lists and the refusals below)."""
    run_dir = request.getfixturevalue("toy_translation_run")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["data"]["max_length"] == MAX_LENGTH
    assert config["decoding"]["beam_size"] == 3
    return run_dir


def _translate(capsys, run, *args):
    code = main(["translate", str(run), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _scored(lines):
    pairs = [line.split(" ||| ", 1) for line in lines]
    return [(float(score), text) for score, text in pairs]


def test_n_best_with_scores_lists_hypotheses_best_first(toy_run, capsys):
    code, out, _ = _translate(capsys, toy_run, *SENTENCES)
    assert code == 0
    best = out.splitlines()
    code, out, _ = _translate(capsys, toy_run, "--n-best", "3", "--with-scores", *SENTENCES)
    assert code == 0
    hypotheses = _scored(out.splitlines())
    assert len(hypotheses) == 3 * len(SENTENCES)
    for i, expected in enumerate(best):
        group = hypotheses[3 * i : 3 * i + 3]
        assert group[0][1] == expected  # the 1-best is what plain translate prints
        assert [s for s, _ in group] == sorted((s for s, _ in group), reverse=True)
        assert len({t for _, t in group}) == 3
        assert all(s < 0 for s, _ in group)


def test_jsonl_has_every_hypothesis_with_tokens_and_scores(toy_run, capsys, tmp_path):
    code, out, _ = _translate(capsys, toy_run, "--n-best", "2", "--with-scores", *SENTENCES)
    assert code == 0
    scored = _scored(out.splitlines())
    output = tmp_path / "out.jsonl"
    args = ["--n-best", "2", "--format", "jsonl", "--output", str(output), *SENTENCES]
    assert _translate(capsys, toy_run, *args)[0] == 0
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in records] == SENTENCES
    flat = [h for r in records for h in r["hypotheses"]]
    assert len(flat) == 2 * len(SENTENCES)
    for hypothesis, (score, text) in zip(flat, scored, strict=True):
        assert set(hypothesis) == {"text", "tokens", "score"}
        assert hypothesis["text"] == text
        assert hypothesis["tokens"] == text.split()  # a word tokenizer's tokens
        assert hypothesis["score"] == pytest.approx(score, abs=1e-6)


def test_n_best_larger_than_the_beam_is_refused(toy_run, capsys, tmp_path):
    output = tmp_path / "out.txt"
    code, out, err = _translate(
        capsys, toy_run, "--n-best", "3", "--beam-size", "2", "--output", str(output), "a dog"
    )
    assert code == 2 and "--n-best 3" in err and "beam size, 2" in err
    assert "Traceback" not in err and not output.exists() and out == ""
    assert _translate(capsys, toy_run, "--n-best", "0", "a dog")[0] == 2


def test_score_of_the_beams_translations_is_the_beams_score(toy_run, capsys, tmp_path):
    """With length_penalty 0, scoring the beam's 1-best gives back the beam's score."""
    no_penalty = ["--set", "decoding.length_penalty=0"]
    code, out, _ = _translate(capsys, toy_run, "--with-scores", *no_penalty, *SENTENCES)
    assert code == 0
    translated = _scored(out.splitlines())
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    target.write_text("\n".join(t for _, t in translated) + "\n", encoding="utf-8")
    output = tmp_path / "scores.txt"
    args = ["score", str(toy_run), "--source", str(source), "--target", str(target)]
    assert main([*args, "--output", str(output)]) == 0
    err = capsys.readouterr().err
    scored = _scored(output.read_text(encoding="utf-8").splitlines())
    assert [t for _, t in scored] == [t for _, t in translated]
    for (score, _), (beam_score, _) in zip(scored, translated, strict=True):
        assert score == pytest.approx(beam_score, abs=1e-4)
    # Totals: tokens with EOS, mean NLL, perplexity = exp(mean NLL).
    tokens = sum(len(t.split()) + 1 for _, t in translated)
    nll = -sum(s for s, _ in scored) / tokens
    assert f"{tokens} tokens" in err
    assert f"mean negative log-likelihood {nll:.4f}" in err
    assert f"perplexity {math.exp(nll):.4f}" in err
    # To stdout without --output; a worse target scores lower.
    target.write_text("\n".join(["dog dog dog"] * len(SENTENCES)) + "\n", encoding="utf-8")
    assert main(args) == 0
    worse = _scored(capsys.readouterr().out.splitlines())
    assert all(w < s for (w, _), (s, _) in zip(worse, scored, strict=True))


def test_score_refuses_missing_files_and_mismatched_line_counts(toy_run, capsys, tmp_path):
    source, target = tmp_path / "src.txt", tmp_path / "tgt.txt"
    source.write_text("a dog\nthe cat\n", encoding="utf-8")
    target.write_text("a dog\n", encoding="utf-8")
    output = tmp_path / "scores.txt"
    base = ["score", str(toy_run), "--output", str(output)]
    assert main([*base, "--source", str(tmp_path / "nope.txt"), "--target", str(target)]) == 2
    err = capsys.readouterr().err
    assert "--source" in err and "nope.txt" in err and "Traceback" not in err
    assert main([*base, "--source", str(source), "--target", str(source.parent)]) == 2
    assert "--target" in capsys.readouterr().err
    assert main([*base, "--source", str(source), "--target", str(target)]) == 2
    err = capsys.readouterr().err
    assert "has 2 lines" in err and "has 1" in err and "src.txt" in err and "tgt.txt" in err
    assert not output.exists()


def test_over_long_inputs_are_cut_with_a_warning(toy_run, capsys, caplog):
    prefix = " ".join(LONG.split()[: MAX_LENGTH - 1])
    with caplog.at_level(logging.WARNING):
        code, out, _ = _translate(capsys, toy_run, LONG, "a dog", LONG, prefix)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == lines[2] == lines[3]  # cut to the prefix
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "2 of 4 inputs are longer than 15 tokens (data.max_length - 1) and were cut to 15 "
        "tokens (the first is input line 1, 24 tokens)" in w
        for w in warnings
    ), warnings


def test_no_truncate_refuses_the_first_over_long_input(toy_run, capsys, tmp_path):
    source = tmp_path / "in.txt"
    source.write_text(f"a dog\n{LONG}\n{LONG} again\n", encoding="utf-8")
    output = tmp_path / "out.txt"
    args = ["--no-truncate", "--input", str(source), "--output", str(output)]
    code, _, err = _translate(capsys, toy_run, *args)
    assert code == 2 and "input line 2 has 24 tokens" in err and "15" in err
    assert not output.exists() and "Traceback" not in err
    source.write_text("a dog\nthe cat\n", encoding="utf-8")
    assert _translate(capsys, toy_run, *args)[0] == 0 and output.exists()


def test_evaluate_warns_about_over_long_sources(toy_run, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        code = main(
            ["evaluate", str(toy_run), "--split", "test", "--beam-size", "1",
             "--set", "data.max_length=4"]
        )  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert any("inputs are longer than 3 tokens" in r.getMessage() for r in caplog.records)


def test_sampling_is_reproducible_and_seeded(toy_run, capsys):
    sampling = ["--beam-size", "1", "--set", "decoding.sampling_topk=0",
                "--set", "decoding.sampling_temperature=3"]  # fmt: skip
    runs = {}
    for seed in (1, 1, 2):
        code, out, _ = _translate(
            capsys, toy_run, *sampling, "--set", f"decoding.seed={seed}", *SENTENCES * 3
        )
        assert code == 0
        runs.setdefault(seed, []).append(out)
    assert runs[1][0] == runs[1][1]
    assert runs[1][0] != runs[2][0]
    code, greedy, _ = _translate(capsys, toy_run, "--beam-size", "1", *SENTENCES)
    code, topk1, _ = _translate(
        capsys, toy_run, "--beam-size", "1", "--set", "decoding.sampling_topp=0.99",
        "--set", "decoding.sampling_topk=1", *SENTENCES,
    )  # fmt: skip
    assert topk1 == greedy


def test_bad_sampling_settings_are_refused(toy_run, capsys):
    code, out, err = _translate(
        capsys, toy_run, "--beam-size", "1", "--set", "decoding.sampling_temperature=0", "a dog"
    )
    assert code == 2 and "decoding.sampling_temperature" in err and "> 0" in err
    assert out == "" and "Traceback" not in err
    # Sampling with a beam: the config's beam (3) is refused, so is --beam-size 2.
    code, _, err = _translate(capsys, toy_run, "--set", "decoding.sampling_topk=0", "a dog")
    assert code == 2 and "decoding.beam_size: 1` (found 3)" in err
    code, _, err = _translate(
        capsys, toy_run, "--beam-size", "2", "--set", "decoding.sampling_topk=0", "a dog"
    )
    assert code == 2 and "decoding.beam_size: 1` (found 2)" in err
    code, _, err = _translate(capsys, toy_run, "--beam-size", "0", "a dog")
    assert code == 2 and "decoding.beam_size" in err and "Traceback" not in err


def test_input_lines_are_split_as_evaluation_data_is(toy_run, capsys, tmp_path, monkeypatch):
    """A U+2028 or U+0085 inside a sentence is part of it (str.splitlines() would have made two
    outputs of one input line); `--input`, standard input and `read_parallel` agree."""
    from transformer_tf.data.parallel import read_parallel

    text = f"{SENTENCES[0]}\u2028{SENTENCES[1]}\n{SENTENCES[2]}\u0085 \r\n"
    source = tmp_path / "input.txt"
    source.write_text(text, encoding="utf-8", newline="")
    assert read_parallel(source, source).sources == [
        f"{SENTENCES[0]}\u2028{SENTENCES[1]}",
        SENTENCES[2],
    ]
    code, from_file, _ = _translate(capsys, toy_run, "--input", str(source))
    assert code == 0 and len(from_file.splitlines()) == 2
    code, one_by_one, _ = _translate(
        capsys, toy_run, f"{SENTENCES[0]}\u2028{SENTENCES[1]}", SENTENCES[2]
    )
    assert code == 0 and from_file == one_by_one
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, from_stdin, _ = _translate(capsys, toy_run)
    assert code == 0 and from_stdin == from_file
