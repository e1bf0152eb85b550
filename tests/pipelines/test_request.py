"""GenerationRequest: one set of rules, each caller's limits (CLI/API vs web page)."""

import math

import pytest

from dallebrain.pipelines import defaults as D
from dallebrain.pipelines.request import API_LIMITS, MAX_SEED, WEB_LIMITS, GenerationRequest


def test_defaults_come_from_the_defaults_module_and_pass():
    r = GenerationRequest("axial T2-weighted slice").checked()
    assert (r.steps, r.guidance, r.sampler, r.prior_steps, r.prior_guidance) == (
        D.STEPS, D.GUIDANCE, D.SAMPLER, D.PRIOR_STEPS, D.PRIOR_GUIDANCE)
    assert GenerationRequest("x", n=3, seed=7).checked().seeds == [7, 8, 9]


def test_web_form_values_are_normalised():
    r = GenerationRequest("  axial   T1  ", n=4.0, seed="12", steps=20.0, guidance="3.5").checked(WEB_LIMITS)
    assert (r.prompt, r.n, r.seed, r.steps, r.guidance) == ("axial T1", 4, 12, 20, 3.5)
    assert isinstance(r.n, int) and isinstance(r.seed, int)


@pytest.mark.parametrize("fields, message", [
    ({"prompt": " "}, "empty prompt"),
    ({"n": 0}, "number of images must be between 1 and 1000"),
    ({"n": 2.5}, "number of images must be a whole number"),
    ({"steps": 1001}, "steps must be between 1 and 1000"),
    ({"guidance": -1}, "guidance must be a number of at least 0"),
    ({"guidance": math.nan}, "guidance"),
    ({"seed": -1}, "seed must be between 0"),
    ({"seed": True}, "seed must be a whole number"),
    ({"seed": MAX_SEED, "n": 2}, r"seed \(for 2 image\(s\)\) must be between 0 and"),
    ({"sampler": "plms"}, "unknown sampler 'plms'"),
    ({"route": "gan"}, "unknown route 'gan'"),
    ({"prior_steps": 0}, "prior_steps must be between 1 and 1000"),
    ({"lora_scale": 9}, "LoRA scale must be between 0 and 4"),
])
def test_api_refusals_are_one_line(fields, message):
    with pytest.raises(ValueError, match=message) as info:
        GenerationRequest(**{"prompt": "axial T1", **fields}).checked(API_LIMITS)
    assert "\n" not in str(info.value)


def test_the_web_page_has_tighter_limits_than_the_api():
    big = {"prompt": "axial T1", "n": 17, "steps": 101, "seed": 2**32, "guidance": 21}
    GenerationRequest(**big).checked(API_LIMITS)  # fine for the CLI
    for key, message in (("n", "between 1 and 16"), ("steps", "between 1 and 100"),
                         ("seed", "between 0 and 4294967295"), ("guidance", "between 0 and 20")):
        with pytest.raises(ValueError, match=message):
            GenerationRequest(**{"prompt": "axial T1", key: big[key]}).checked(WEB_LIMITS)
    with pytest.raises(ValueError, match="prompt too long: 301 characters"):
        GenerationRequest("x" * 301).checked(WEB_LIMITS)
    assert GenerationRequest("x" * 301).checked(API_LIMITS).prompt == "x" * 301  # the API truncates, and says so
