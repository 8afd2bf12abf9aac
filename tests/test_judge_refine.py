"""Judge, refiner, image-to-prompt and the self-rewarding DPO round on tiny models."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from pipelines import checks, judge, refine, reports, self_reward
from pipelines.commands import judge as judge_cmd
from pipelines.commands import refine as refine_cmd
from pipelines.commands import self_reward as self_reward_cmd
from pipelines.self_reward import Pair


@pytest.mark.parametrize("text,expected", [
    ("Score: 4\nNice light.", 4.0),
    ("**Score:** 4/5 - well composed", 4.0),
    ("score = 3.5", 3.5),
    ("Score - 4 out of 5", 4.0),
    ("Rating: 2. The cat is missing.", 2.0),
    ("SCORE:5", 5.0),
    ("Score: **3**", 3.0),
    ("I would say 4, but Score: 2", 2.0),
    ("Score: 0", 0.0),
    ("Score: 4.\nThe light is good.", 4.0),
    ("Score: 5.0/5", 5.0),
    ("score:3, because", 3.0),
])
def test_parser_reads_the_usual_formats(text, expected):
    assert judge.parse_score(text) == expected


@pytest.mark.parametrize("text", [
    "", "The image is lovely.", "Score: 8/10", "Score: 7", "Score: -1", "score: high", "4/5",
    "Scores are subjective.", "Score: 3 out of 10", "underscore 3", "Score: 1e3", "Score: 3 out of ten",
    "Score: 4,5", "Score: 0 to 5, I pick 2", "Score: 2-4", "Score: 4/10",
])
def test_parser_returns_no_score_rather_than_a_wrong_one(text):
    assert judge.parse_score(text) is None
    assert judge.Verdict("aesthetic", judge.parse_score(text)).label() == "no score"


def image(seed: int, size: int = 112) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = (rng.random((size // 8, size // 8, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


def test_continuous_score_is_the_expected_digit(tiny_models):
    _, vlm = tiny_models
    verdicts = judge.continuous_scores(vlm, [(image(0), "alignment", "a cat"), (image(1), "aesthetic", "")])
    assert [v.rubric for v in verdicts] == ["alignment", "aesthetic"]
    for v in verdicts:
        assert 0 <= v.score <= 5
        assert sum(v.digit_probs) == pytest.approx(1.0, abs=1e-5)
        assert v.score == pytest.approx(sum(k * p for k, p in enumerate(v.digit_probs)), abs=1e-5)


def test_continuous_score_follows_the_digit_probabilities(tiny_models, monkeypatch):
    _, vlm = tiny_models
    ids = judge.digit_ids(vlm)

    def confident(items, digit):
        logits = torch.zeros(len(items), len(vlm.tokenizer))
        logits[:, ids[digit]] = 20.0
        return logits

    for digit in (0, 4, 5):
        monkeypatch.setattr(vlm, "next_token_logits", lambda items, d=digit: confident(items, d))
        assert judge.continuous_scores(vlm, [(image(0), "aesthetic", "")])[0].score == pytest.approx(digit, abs=1e-3)
    monkeypatch.setattr(vlm, "next_token_logits", lambda items: torch.zeros(len(items), len(vlm.tokenizer)))
    assert judge.continuous_scores(vlm, [(image(0), "aesthetic", "")])[0].score == pytest.approx(2.5)


def test_sampled_mode_averages_parsed_scores_and_never_invents_one(tiny_models, monkeypatch):
    _, vlm = tiny_models
    replies = iter([["Score: 4\nGood light.", "nothing", "Score: 2/5"], ["no", "idea", "at all"]])
    monkeypatch.setattr(vlm, "generate_text", lambda *a, **k: next(replies))
    first = judge.sampled_score(vlm, image(0), "preference", "a cat")
    assert first.score == 3.0 and first.explanation == "Good light."  # the first scored reply's reason
    assert judge.sampled_score(vlm, image(0), "preference", "a cat").score is None


class SideBiasedJudge:
    """A stand-in VLM for the comparison: P(left is better) from which image stands on the left (red or blue)."""

    def __init__(self, p_red_left: float, p_blue_left: float):
        self.p = {"red": p_red_left, "blue": p_blue_left}

    def nll_rows(self, items):
        out = []
        for pixels, _, _ in items:
            left = pixels[0, :, :, : pixels.shape[-1] // 3].mean(dim=(1, 2))
            out.append(-np.log(self.p["red" if left[0] > left[2] else "blue"]))
        return torch.tensor(out)


def test_pairwise_comparison_averages_both_orders():
    """Each case could fail: a judge read in one order only, or not averaged, gives other numbers."""
    red, blue = Image.new("RGB", (64, 64), (220, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 220))
    # A judge that likes red wherever it stands: red wins from either order, and the orders agree.
    likes_red = SideBiasedJudge(p_red_left=0.8, p_blue_left=0.3)
    c = judge.compare(likes_red, red, blue, "a red bicycle")
    assert (c.left_first, c.left_second) == pytest.approx((0.8, 0.3))
    assert c.p_first_better == pytest.approx(0.75) and c.winner == "first" and c.orders_agree
    swapped = judge.compare(likes_red, blue, red, "a red bicycle")
    assert swapped.p_first_better == pytest.approx(0.25) and swapped.winner == "second"
    # A judge that only likes the left position: averaging both orders leaves no preference, flagged as such.
    left_lover = SideBiasedJudge(p_red_left=0.9, p_blue_left=0.9)
    c = judge.compare(left_lover, red, blue, "a red bicycle")
    assert c.p_first_better == pytest.approx(0.5) and c.winner == "tie" and not c.orders_agree


def test_judge_report_has_every_rubric_and_vqascore(tiny_models):
    _, vlm = tiny_models
    report = judge.judge(vlm, image(4), "a cat")
    assert set(report.verdicts) == set(judge.RUBRICS)
    assert 0 < report.vqa_score < 1
    assert isinstance(report.verdicts["preference"].explanation, str)
    with pytest.raises(ValueError, match="prompt is empty"):
        judge.judge(vlm, image(4), "  ")


def test_refiner_returns_n_distinct_candidates_and_the_baseline_ranked(tiny_models, writing_vlm):
    generator, vlm = tiny_models
    rows = refine.refine(generator, vlm, "a cat on a windowsill", n=5, seed=1)
    assert len(rows) == 6 and sum(r.baseline for r in rows) == 1
    assert next(r for r in rows if r.baseline).prompt == "a cat on a windowsill"
    assert len({refine.prompt_key(r.prompt) for r in rows}) == 6
    combined = [r.combined for r in rows]
    assert combined == sorted(combined, reverse=True)
    assert all(r.image is not None and r.image.size == (112, 112) for r in rows)
    assert all(set(r.scores) == {"aesthetic", "alignment", "preference", "vqa"} for r in rows)
    limit = generator.preset.max_sequence_length
    assert all(len(generator.prompt_tokenizer(r.prompt)["input_ids"]) <= limit for r in rows)


def test_duplicates_are_removed_and_resampled(tiny_models, monkeypatch):
    _, vlm = tiny_models
    batches = iter([["Prompt: a cat", "A red cat.", "a red cat", '"A red cat!"'], ["a blue cat", "a green cat"]])
    monkeypatch.setattr(vlm, "generate_text", lambda *a, **k: next(batches))
    got = [c.prompt for c in refine.propose(vlm, "a cat", n=3)]
    assert got == ["A red cat.", "a blue cat", "a green cat"]  # "a cat" is the user's own prompt


def test_long_prompts_are_cut_at_a_word_boundary_and_marked(tiny_models):
    generator, _ = tiny_models
    tok, limit = generator.prompt_tokenizer, 12
    long = "a quiet harbour at dawn with fishing boats, gulls over the water and mist on the hills behind"
    text, cut = refine.fit_to_limit(long, tok, limit)
    assert cut and long.startswith(text) and long[len(text)] in " ,"
    assert len(tok(text)["input_ids"]) <= limit < len(tok(text + " " + long[len(text):].split()[0])["input_ids"])
    assert refine.fit_to_limit("a cat", tok, limit) == ("a cat", False)


@pytest.mark.parametrize("n", [0, 17])
def test_candidate_count_outside_1_to_16_is_refused(tiny_models, n):
    _, vlm = tiny_models
    with pytest.raises(ValueError, match=f"candidates {n} "):
        refine.propose(vlm, "a cat", n=n)


def test_image_to_prompt_recreates_and_scores_closeness(tiny_models):
    generator, vlm = tiny_models
    candidate, closeness = refine.recreate(generator, vlm, image(5, size=200))
    assert candidate.prompt and candidate.image.size == (112, 112)
    assert 0 < closeness < 1
    assert refine.similarity(vlm, image(5), image(6)) == pytest.approx(refine.similarity(vlm, image(6), image(5)))


def test_uploads_that_are_not_images_or_are_huge(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(ValueError, match="x.png"):
        checks.read_image(tmp_path / "x.png")
    big = Image.new("RGB", (8000, 5000), "navy")  # 40 megapixels
    small, note = checks.fit_upload(big)
    assert max(small.size) == checks.MAX_UPLOAD_SIDE and "8000x5000" in note and "40 MP" in note
    assert checks.fit_upload(Image.new("RGB", (640, 480)))[1] is None


PAIRS = [Pair("a cat", "a fluffy cat on a sunny windowsill, warm light", "cat cat cat", 4.0, 1.0),
         Pair("a beach", "a tropical beach at sunset with palm trees", "beach no", 3.5, 2.0)]


def test_dpo_round_lowers_the_loss_and_widens_the_margin(tiny_models, tmp_path):
    _, vlm = tiny_models
    before = self_reward.response_logprob(vlm, ["a cat"], [PAIRS[0].chosen])
    log = self_reward.train_dpo(vlm, PAIRS, tmp_path / "lora", epochs=5, lr=1e-3)
    assert log[0]["loss"] == pytest.approx(np.log(2), abs=1e-4)  # policy == reference at the start
    assert log[-1]["loss"] < log[0]["loss"] - 0.02
    assert log[-1]["margin"] > log[0]["margin"] + 0.3
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    # The shared VLM is back as it was, and the refiner can load the LoRA for a while.
    assert torch.equal(self_reward.response_logprob(vlm, ["a cat"], [PAIRS[0].chosen]), before)
    with refine.vlm_adapter(vlm, tmp_path / "lora"):
        tuned = self_reward.response_logprob(vlm, ["a cat"], [PAIRS[0].chosen])
    assert float(tuned) > float(before)
    assert torch.equal(self_reward.response_logprob(vlm, ["a cat"], [PAIRS[0].chosen]), before)


def test_dpo_loss_matches_its_formula():
    pc, pr, rc, rr = torch.tensor([-5.0]), torch.tensor([-9.0]), torch.tensor([-6.0]), torch.tensor([-8.0])
    loss, margin = self_reward.dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert float(margin) == pytest.approx(2.0)
    assert float(loss) == pytest.approx(-np.log(1 / (1 + np.exp(-0.2))))


def test_self_reward_cli_writes_pairs_and_a_vlm_lora(tmp_path, capsys, writing_vlm):
    (tmp_path / "prompts.txt").write_text("a cat on a windowsill\n\na tropical beach\n")
    code = self_reward_cmd.main(["--preset", "tiny", "--prompts", str(tmp_path / "prompts.txt"), "--n", "3",
                             "--epochs", "1", "--lr", "1e-3", "--out", str(tmp_path / "sr")])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "sr" / "round1" / "pairs.jsonl").read_text().splitlines()]
    assert rows and all(r["chosen_score"] > r["rejected_score"] and r["chosen"] != r["rejected"] for r in rows)
    assert (tmp_path / "sr" / "round1" / "vlm-lora" / "adapter_model.safetensors").is_file()
    out = capsys.readouterr().out
    # Before and after, by the judge without the LoRA (the tiny preset has no analytic truth to add)
    assert re.search(r"round 1: \d preference pairs; DPO loss", out), out
    assert re.search(r"judge's score of the rewrites .*: \d\.\d{3} -> \d\.\d{3}", out) and "analytic" not in out
    assert f"--vlm-lora {tmp_path / 'sr' / 'round1' / 'vlm-lora'}" in out
    rounds = json.loads((tmp_path / "sr" / "rounds.json").read_text())
    assert len(rounds) == 1 and set(rounds[0]["before"]) == {"samples", "judged"}


@pytest.mark.parametrize("argv,pattern", [
    (["--prompt", "", "--n", "8"], "prompt is empty"),
    (["--prompt", "a cat", "--n", "20"], "candidates 20"),
    (["--image", "IMG"], "not a readable image"),
])
def test_refine_cli_bad_input(argv, pattern, tmp_path, capsys):
    (tmp_path / "x.png").write_text("text")
    argv = [str(tmp_path / "x.png") if a == "IMG" else a for a in argv]
    with pytest.raises(SystemExit) as exc:
        refine_cmd.main(["--preset", "tiny", *argv])
    assert exc.value.code == 2 and pattern in capsys.readouterr().err


def test_refine_and_judge_clis(tmp_path, capsys, writing_vlm):
    assert refine_cmd.main(["--preset", "tiny", "--prompt", "a cat", "--n", "2", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[baseline]" in out and len(list(tmp_path.glob("*.png"))) == 3
    assert "Your own prompt scored best." in out or "The winner beats your prompt by " in out
    image(7).save(tmp_path / "a.png")
    image(8).save(tmp_path / "b.png")
    assert judge_cmd.main(["--preset", "tiny", "--prompt", "a cat", "--image", str(tmp_path / "a.png"),
                       "--image", str(tmp_path / "b.png")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["comparison"]["p_first_better"] <= 1 and "vqa_score" in report[str(tmp_path / "a.png")]


def sentencepiece_like_vlm():
    """An Idefics2 adapter around a Llama-style tokenizer ("▁" word starts, digits split apart), without a
    model: enough to check how answers and score digits are tokenised."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.idefics2 import Idefics2ImageProcessorPil

    from pipelines.vlm import Idefics2

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(),
                                                 pre_tokenizers.Digits(individual_digits=True)])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(["User: Is it red? Assistant: Yes No Score: 0 1 2 3 4 5 yes no"] * 20,
                            trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    return Idefics2(torch.nn.Linear(1, 1), tokenizer, Idefics2ImageProcessorPil())


def test_answers_and_digits_are_tokenised_as_the_model_writes_them():
    vlm = sentencepiece_like_vlm()
    vlm.tokenizer.chat_template = ("{% for m in messages %}User: {{ m['content'][0]['text'] }}\n{% endfor %}"
                                   "{% if add_generation_prompt %}Assistant:{% endif %}")
    prompt, answer = vlm.encode_turn("Is it red?", None, "Yes")
    assert vlm.tokenizer.convert_ids_to_tokens(answer) == ["▁Yes"]  # one token, as the model writes it
    assert prompt[0] == vlm.tokenizer.bos_token_id  # the template has no BOS; the processor would add it
    ids = judge.digit_ids(vlm)
    assert [vlm.tokenizer.decode([i]).strip() for i in ids] == [str(k) for k in range(6)]
    assert len(set(ids)) == 6


def test_near_even_comparisons_are_ties():
    assert judge.Comparison(0.505, 0.1, 0.1, False).winner == "tie"
    assert judge.Comparison(0.6, 0.7, 0.5, True).winner == "first"
    assert judge.Comparison(0.3, 0.2, 0.6, True).winner == "second"
    assert "neither (a tie)" in reports.comparison_markdown(judge.Comparison(0.5, 0.1, 0.1, False))


@pytest.mark.parametrize(("text", "ok"), [
    ("a beach at golden hour, low horizon", True),
    ("A quiet harbour at dawn, 35mm, f/2.8, soft light", True),  # a few non-words are fine
    ("�X ofit� linnsSuns s�� city; paletteX", False),  # what random weights write
    ("a cat\x06 on a mat", False),
    ("YesYesYesYes", False),  # one "word": not a prompt
    ("", False),
])
def test_a_reply_is_readable_when_it_is_words(text, ok):
    from pipelines.vlm import readable

    assert readable(text) is ok


def test_the_judges_reason_is_the_line_after_its_score():
    assert judge.first_reason("Score: 4\nThe horizon sits on a third. The sun is clear.\nMore.") == \
        "The horizon sits on a third. The sun is clear."
    assert judge.first_reason("**Score:** 3/5 - Balanced and bright") == "Balanced and bright"
    assert judge.first_reason("Score: 2\n\ufffd\x07 zz") == ""
    long = judge.first_reason("Score: 1\n" + "word " * 60)
    assert len(long) <= judge.REASON_CHARS + 3 and long.endswith("...")


def test_a_vlm_that_writes_nothing_usable_is_one_line(tmp_path, capsys):
    # The tiny preset's VLM has random weights: nothing it writes is a prompt
    with pytest.raises(SystemExit) as exc:
        refine_cmd.main(["--preset", "tiny", "--prompt", "a cat", "--n", "2"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "the loaded VLM wrote nothing usable as a prompt" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    with pytest.raises(SystemExit) as exc:
        self_reward_cmd.main(["--preset", "tiny", "--prompts", str(tmp_path / "prompts.txt"), "--n", "2",
                          "--out", str(tmp_path / "sr")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "wrote no readable rewrite of any prompt" in err and "Traceback" not in err
