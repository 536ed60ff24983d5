"""On the embedded SmolLM2-135M (a real 30-block Llama): load from GGUF, prune, export, reload."""

from pathlib import Path

import pytest
import torch
import transformers

from prunekit import load_model, load_windows, prune, save_model
from prunekit.models.loading import embedded_model_path

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    try:
        embedded_model_path()
    except Exception as error:  # the package is installed by `make test`; say so if it is not
        pytest.skip(str(error))
    return load_model("smollm2-135m", device="cpu")


def test_gguf_alias_loads_a_30_block_llama_that_predicts_text(smollm2):
    model, tokenizer = smollm2.model, smollm2.tokenizer
    assert model.config.model_type == "llama" and smollm2.adapter.num_blocks == 30
    assert not hasattr(model.config, "quantization_config")
    prompt = tokenizer("The capital of France is", return_tensors="pt").input_ids
    answer = tokenizer.decode(model.generate(prompt, max_new_tokens=3, do_sample=False)[0, prompt.shape[1] :])
    assert "Paris" in answer


def test_pruned_embedded_model_exports_and_reloads_identically(smollm2, tmp_path):
    windows = load_windows("builtin", smollm2.tokenizer, purpose="calibration", num_windows=2, seq_len=64)
    pruned, plan = prune(smollm2.model, "shortgpt", windows, remove=3, progress=False)
    assert smollm2.adapter.num_blocks == 30 and len(plan.removed_blocks) == 3
    assert 0 not in plan.removed_blocks and 29 not in plan.removed_blocks  # the ends matter most
    out = save_model(pruned, smollm2.tokenizer, tmp_path / "pruned")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = windows.input_ids[:1, :32]
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruned(ids).logits, rtol=0, atol=0)
    kwargs = dict(max_new_tokens=10, do_sample=False)
    assert torch.equal(reloaded.generate(ids, use_cache=True, **kwargs), reloaded.generate(ids, use_cache=False, **kwargs))


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_rolling_perplexity_matches_lm_eval_on_the_embedded_model(smollm2):
    lm_eval_hf = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance

    from prunekit.data.sources import builtin_text
    from prunekit.evaluation.perplexity import rolling_loglikelihood

    text = builtin_text("evaluation")[:3000]
    ours = rolling_loglikelihood(smollm2.model, smollm2.tokenizer, text, max_len=256)
    lm = lm_eval_hf.HFLM(pretrained=smollm2.model, tokenizer=smollm2.tokenizer, max_length=256, batch_size=1, device="cpu")
    theirs = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]
    assert ours.tokens > 2 * 256
    assert -ours.nll == pytest.approx(theirs, rel=1e-5)


@pytest.mark.skipif(not (SHARED_DATA / "piqa").is_dir(), reason="needs the shared data folder beside the repository")
def test_local_tasks_score_the_embedded_model_differently_from_random_weights(smollm2):
    pytest.importorskip("lm_eval")
    from prunekit.evaluation.tasks import run_tasks

    tasks = ["piqa", "arc_easy"]
    trained = run_tasks(smollm2.model, smollm2.tokenizer, tasks, data_dir=SHARED_DATA, limit=20)
    torch.manual_seed(0)
    random_model = transformers.AutoModelForCausalLM.from_config(smollm2.model.config).eval()
    random = run_tasks(random_model, smollm2.tokenizer, tasks, data_dir=SHARED_DATA, limit=20)
    for results in (trained, random):
        assert all(0.0 <= results[t]["acc"] <= 1.0 and results[t]["items"] == 20 for t in tasks)
    assert [trained[t]["acc_norm"] for t in tasks] != [random[t]["acc_norm"] for t in tasks]
    assert trained["piqa"]["acc_norm"] >= 0.6  # the real model is well above chance (0.5) on PIQA


def test_iterabre_on_the_embedded_model_resumes_to_the_same_weights(smollm2, tmp_path):
    """Tied embeddings survive the run directory's checkpoints, and resume equals an unbroken run."""
    from prunekit.methods.iterabre import IterabreConfig, iterabre
    from prunekit.recovery import RecoveryConfig, dense_teacher, recovery_windows

    tokenizer = smollm2.tokenizer
    calibration = load_windows("builtin", tokenizer, purpose="calibration", num_windows=1, seq_len=64)
    data = recovery_windows("builtin", tokenizer, num_tokens=128, seq_len=64)
    heldout = load_windows("builtin", tokenizer, purpose="evaluation", num_windows=1, seq_len=64)
    teacher = dense_teacher(smollm2.model)

    def settings():
        # BI keeps the scan to one pass; the removal metrics are covered on tiny models.
        return IterabreConfig(
            remove=2, metric="bi", recovery=RecoveryConfig(tokens=128, seq_len=64, grad_accumulation=1, learning_rate=1e-4)
        )

    def run(run_dir, **kwargs):
        model = dense_teacher(smollm2.model)
        for param in model.parameters():
            param.requires_grad_(True)
        plan = iterabre(model, teacher, calibration, data, settings(), run_dir=str(run_dir), heldout=heldout, progress=False, **kwargs)
        return model, plan

    def interrupt(entry):
        raise KeyboardInterrupt

    whole, plan = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", on_iteration=interrupt)
    resumed, _ = run(tmp_path / "b", resume=True)
    assert whole.lm_head.weight.data_ptr() == whole.model.embed_tokens.weight.data_ptr()
    assert resumed.lm_head.weight.data_ptr() == resumed.model.embed_tokens.weight.data_ptr()
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(plan.removed_blocks) == 2 and 0 not in plan.removed_blocks
    *removals, final = plan.steps  # the default: re-score and remove, then one recovery of every block
    assert final["final"] and final["heldout_perplexity_after_recovery"] < 2 * removals[-1]["heldout_perplexity_after_removal"]
