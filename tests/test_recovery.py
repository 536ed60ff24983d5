import copy

import pytest
import torch
import torch.nn.functional as F

from prunekit.data.sources import load_text
from prunekit.data.windows import TokenWindows, tokenize_text
from prunekit.errors import PrunekitError
from prunekit.models.adapters import ModelAdapter, parameter_count
from prunekit.models.surgery import remove_blocks
from prunekit.recovery import RecoveryConfig, RecoveryDiverged, recover, recovery_windows, self_generated_windows
from prunekit.recovery.config import default_learning_rate
from prunekit.recovery.trainer import choose_micro_batch, training_device

from conftest import VOCAB, tiny_model


def windows(count=16, seq_len=24, seed=0):
    ids = torch.randint(3, VOCAB, (count, seq_len), generator=torch.Generator().manual_seed(seed))
    return TokenWindows(ids, "random", ids.numel())


def pair(family="llama"):
    teacher = tiny_model(family)
    student = copy.deepcopy(teacher)
    remove_blocks(student, [1])
    return teacher, student


@torch.no_grad()
def kl_to_teacher(student, teacher, data):
    s = F.log_softmax(student(input_ids=data.input_ids).logits, -1)
    t = F.log_softmax(teacher(input_ids=data.input_ids).logits, -1)
    return F.kl_div(s.flatten(0, 1), t.flatten(0, 1), log_target=True, reduction="batchmean").item()


def config(**overrides):
    base = {"tokens": 16 * 24 * 2, "seq_len": 24, "micro_batch_size": 2, "grad_accumulation": 2, "learning_rate": 2e-3}
    return RecoveryConfig(**{**base, **overrides})


@pytest.mark.parametrize("scope", ["blocks", "lora", "full"])
def test_distillation_brings_the_student_closer_to_the_teacher(scope):
    teacher, student = pair()
    data = windows()
    before = kl_to_teacher(student, teacher, data)
    result = recover(student, data, config(scope=scope), teacher=teacher, progress=False)
    assert kl_to_teacher(student, teacher, data) < 0.8 * before
    assert result.steps == 16 * 24 * 2 // (2 * 24 * 2) and result.tokens == result.steps * 2 * 24 * 2
    assert result.loss_last < result.loss_first and len(result.history) == result.steps


@pytest.mark.parametrize("scope", ["blocks", "lora"])
def test_a_model_trained_in_bf16_computes_in_its_own_precision_afterwards(scope):
    teacher, student = pair()
    data = windows(count=4)
    recover(student, data, config(scope=scope, precision="bf16", tokens=4 * 24), teacher=teacher, progress=False)
    plain = copy.deepcopy(teacher)
    remove_blocks(plain, [1])
    plain.load_state_dict(student.state_dict())
    with torch.no_grad():  # no autocast left behind: the same logits as a fresh fp32 model with these weights
        assert torch.equal(student(input_ids=data.input_ids).logits, plain(input_ids=data.input_ids).logits)


def test_lora_is_merged_back_into_a_plain_model():
    teacher, student = pair()
    original = {k: v.clone() for k, v in student.state_dict().items()}
    recover(student, windows(), config(scope="lora", lora_rank=4), teacher=teacher, progress=False)
    assert type(student).__name__ == "LlamaForCausalLM"
    assert not any("lora" in name for name, _ in student.named_modules())
    assert student.state_dict().keys() == original.keys()
    changed = [k for k in original if not torch.equal(original[k], student.state_dict()[k])]
    assert changed and all("layers" in k and "proj" in k for k in changed)


def test_neighbour_scope_trains_only_the_given_blocks():
    teacher, student = pair()
    frozen = copy.deepcopy(ModelAdapter(student).layers[2].state_dict())
    trained = copy.deepcopy(ModelAdapter(student).layers[0].state_dict())
    recover(student, windows(), config(scope="neighbours"), teacher=teacher, blocks=[0, 1], progress=False)
    layers = ModelAdapter(student).layers
    assert all(torch.equal(v, layers[2].state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, layers[0].state_dict()[k]) for k, v in trained.items())
    assert all(p.requires_grad for p in student.parameters())  # left as found: nothing stays frozen


def test_same_seed_gives_identical_weights():
    teacher, student_a = pair()
    student_b = copy.deepcopy(student_a)
    recover(student_a, windows(), config(), teacher=teacher, progress=False)
    recover(student_b, windows(), config(), teacher=teacher, progress=False)
    a, b = student_a.state_dict(), student_b.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scope", ["blocks", "lora"])
def test_a_diverging_run_restores_the_weights_and_says_the_learning_rate(scope):
    teacher, student = pair()
    original = {k: v.clone() for k, v in student.state_dict().items()}
    with pytest.raises(RecoveryDiverged, match="learning rate") as caught:
        recover(
            student,
            windows(),
            config(scope=scope, learning_rate=1e30, max_grad_norm=0.0, warmup_ratio=0.0),
            teacher=teacher,
            progress=False,
        )
    assert caught.value.step >= 2
    restored = student.state_dict()
    assert restored.keys() == original.keys() and all(torch.equal(original[k], restored[k]) for k in original)


def test_language_model_loss_alone_needs_no_teacher():
    _, student = pair()
    result = recover(student, windows(), config(kd_weight=0.0, lm_weight=1.0), progress=False)
    assert result.loss_last < result.loss_first
    with pytest.raises(PrunekitError, match="needs a teacher"):
        recover(student, windows(), config(), progress=False)


def test_hidden_state_loss_is_relative_and_trains():
    teacher, student = pair()
    result = recover(student, windows(), config(kd_weight=0.0, hidden_weight=1.0), teacher=teacher, progress=False)
    assert 0 < result.history[0]["hidden"] and result.loss_last < result.loss_first


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"tokens": 0}, "tokens 0"),
        ({"scope": "everything"}, "scope"),
        ({"learning_rate": 0}, "learning_rate 0"),
        ({"kd_weight": 0.0}, "not all zero"),
        ({"precision": "int8"}, "precision"),
    ],
)
def test_bad_settings_get_one_line_errors(overrides, message):
    teacher, student = pair()
    with pytest.raises(PrunekitError, match=message):
        recover(student, windows(), config(**overrides), teacher=teacher, progress=False)


def test_small_data_is_repeated_with_a_warning(caplog):
    teacher, student = pair()
    result = recover(student, windows(count=4), config(tokens=4 * 24 * 3), teacher=teacher, progress=False)
    assert result.epochs == pytest.approx(3.0) and "seen 3.0 times" in caplog.text


def test_recovery_windows_come_from_the_spec_in_seeded_order(tiny_tokenizer):
    a = recovery_windows("builtin", tiny_tokenizer, num_tokens=10 * 32, seq_len=32, seed=1)
    b = recovery_windows("builtin", tiny_tokenizer, num_tokens=10 * 32, seq_len=32, seed=1)
    c = recovery_windows("builtin", tiny_tokenizer, num_tokens=10 * 32, seq_len=32, seed=2)
    assert a.input_ids.shape == (10, 32) and torch.equal(a.input_ids, b.input_ids) and not torch.equal(a.input_ids, c.input_ids)


def test_recovery_windows_can_leave_out_the_tokens_an_evaluation_scores(tiny_tokenizer):
    ids = tokenize_text(tiny_tokenizer, load_text("builtin", "calibration").text)
    skipped = 5 * 32
    rest = recovery_windows("builtin", tiny_tokenizer, num_tokens=ids.numel(), seq_len=32, skip_tokens=skipped)
    kept = ids[skipped:]
    expected = {tuple(kept[i * 32 : (i + 1) * 32].tolist()) for i in range(kept.numel() // 32)}
    assert {tuple(row.tolist()) for row in rest.input_ids} == expected  # every window is from after the skipped part
    assert rest.num_windows == (ids.numel() - skipped) // 32 and "after its first 160 tokens" in rest.description
    with pytest.raises(PrunekitError, match="skip_tokens must be 0 or more"):
        recovery_windows("builtin", tiny_tokenizer, num_tokens=64, seq_len=32, skip_tokens=-1)


def test_self_generated_windows_are_seeded_and_sized(tiny_tokenizer):
    teacher = tiny_model("llama")
    a = self_generated_windows(teacher, tiny_tokenizer, num_tokens=50, seq_len=16, seed=3, batch_size=2, progress=False)
    b = self_generated_windows(teacher, tiny_tokenizer, num_tokens=50, seq_len=16, seed=3, batch_size=2, progress=False)
    assert a.input_ids.shape == (4, 16) and torch.equal(a.input_ids, b.input_ids)
    assert int(a.input_ids.max()) < VOCAB and a.input_ids[0, 0] == tiny_tokenizer.bos_token_id


def test_training_runs_where_the_student_is_unless_a_device_is_asked_for(monkeypatch):
    _, student = pair()
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert training_device(student) == torch.device("cpu")
    assert training_device(student, "cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine: the CPU student still trains on the CPU
    assert training_device(student) == torch.device("cpu")


def test_a_cpu_student_and_teacher_stay_on_the_cpu_and_the_run_reports_its_throughput():
    teacher, student = pair()
    result = recover(student, windows(), config(), teacher=teacher, progress=False)
    assert result.device == "cpu" and next(student.parameters()).device.type == "cpu"
    assert next(teacher.parameters()).device.type == "cpu"
    assert result.micro_batch_size == 2 and result.grad_accumulation == 2  # regrouping happens on GPUs only
    assert result.model_flops_per_token > 6 * 0.5 * sum(p.numel() for p in student.parameters())
    assert result.mfu is None and result.peak_memory_mib is None  # no known peak on a CPU


def test_the_largest_micro_batch_that_fits_is_chosen_before_checkpointing():
    gib = 2**30
    fits_up_to = {False: 2, True: 8}  # without / with checkpointing: windows per micro-batch that fit

    def peak(micro, checkpointing):
        return None if micro > fits_up_to[checkpointing] else int(micro * gib)

    assert choose_micro_batch(8, peak, capacity=20 * gib, optimizer_bytes=gib) == (2, False)
    assert choose_micro_batch(6, peak, capacity=20 * gib, optimizer_bytes=gib) == (2, False)  # a divisor of 6
    assert choose_micro_batch(8, peak, capacity=20 * gib, optimizer_bytes=gib, checkpointing=True) == (8, True)
    fits_up_to[False] = 0  # not even one window without checkpointing
    assert choose_micro_batch(4, peak, capacity=20 * gib, optimizer_bytes=gib) == (4, True)
    with pytest.raises(PrunekitError, match="does not fit"):
        choose_micro_batch(4, peak, capacity=2 * gib, optimizer_bytes=2 * gib)


def test_a_teacher_with_a_padded_vocabulary_distils_on_the_shared_ids():
    teacher, student = pair()
    padded = copy.deepcopy(teacher)
    padded.resize_token_embeddings(VOCAB + 64)  # 384 = 6 x 64: the padding checkpoints add
    result = recover(student, windows(), config(), teacher=padded, progress=False)
    assert result.loss_last < result.loss_first


def test_vocabularies_that_differ_by_more_than_padding_are_refused():
    teacher, student = pair()
    other = copy.deepcopy(teacher)
    other.resize_token_embeddings(VOCAB + 200)
    with pytest.raises(PrunekitError, match="do not share a tokenizer"):
        recover(student, windows(), config(), teacher=other, progress=False)
    smaller = copy.deepcopy(teacher)
    smaller.resize_token_embeddings(VOCAB - 64)
    with pytest.raises(PrunekitError, match=f"holds token id .* but the teacher knows only {VOCAB - 64} tokens"):
        recover(student, windows(), config(), teacher=smaller, progress=False)


def test_a_budget_below_one_step_says_so_instead_of_asking_for_data(caplog):
    teacher, student = pair()
    recover(student, windows(count=2), config(tokens=2 * 24), teacher=teacher, progress=False)
    assert "less than one optimizer step" in caplog.text and "pass more data" not in caplog.text


@pytest.mark.parametrize(
    ("scope", "parameters", "expected"),
    [("blocks", 135_000_000, 3e-4), ("full", 999_999_999, 3e-4), ("blocks", 8_000_000_000, 1e-4), ("lora", 8_000_000_000, 4e-3)],
)
def test_the_default_learning_rate_follows_the_scope_and_the_dense_models_size(scope, parameters, expected):
    assert default_learning_rate(scope, parameters) == expected
    assert RecoveryConfig(scope=scope).resolved(parameters).learning_rate == expected
    assert RecoveryConfig(scope=scope, learning_rate=5e-5).resolved(parameters).learning_rate == 5e-5  # given: kept


def test_a_run_without_a_learning_rate_records_the_one_it_chose_by_the_teachers_size(monkeypatch):
    teacher, student = pair()
    chosen = {}
    monkeypatch.setattr("prunekit.recovery.config.default_learning_rate", lambda scope, n: chosen.setdefault(n, 1e-3))
    result = recover(student, windows(), config(learning_rate=None), teacher=teacher, progress=False)
    assert list(chosen) == [parameter_count(teacher)] and result.config["learning_rate"] == 1e-3
