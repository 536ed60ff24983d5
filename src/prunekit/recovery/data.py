"""Token windows to recover on: from any data SPEC, or sampled from the teacher itself (no download)."""

from __future__ import annotations

import logging
import math

import torch
from tqdm.auto import tqdm

from prunekit.data.sources import load_text
from prunekit.data.windows import TokenWindows, tokenize_text
from prunekit.errors import ParameterError, PrunekitError

log = logging.getLogger(__name__)
SELF_GENERATED = "self"


def _shuffled_windows(ids: torch.Tensor, seq_len: int, needed: int, seed: int, description: str) -> TokenWindows:
    count = ids.numel() // seq_len
    if count < 1:
        raise PrunekitError(
            f"recovery data {description} has {ids.numel()} tokens, fewer than one window of {seq_len}; "
            "use more text or a shorter `seq_len`"
        )
    windows = ids[: count * seq_len].view(count, seq_len)
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    windows = windows[order[:needed]]
    return TokenWindows(windows.contiguous(), description, ids.numel())


def recovery_windows(
    spec: str, tokenizer, *, num_tokens: int, seq_len: int, seed: int = 0, text_field: str = "text", skip_tokens: int = 0
) -> TokenWindows:
    """Non-overlapping windows of the SPEC's text, in seeded random order, enough for `num_tokens`.

    `skip_tokens` leaves out the text's first tokens, e.g. the leading windows an evaluation scores,
    so that a model can be recovered on the rest of the same corpus without seeing them.
    Smaller data is used as it is; the trainer then repeats it (and says so).
    """
    if skip_tokens < 0:
        raise ParameterError("skip_tokens", f"must be 0 or more, got {skip_tokens}")
    source = load_text(spec, "calibration", text_field)
    if not source.text.strip():
        raise PrunekitError(f"recovery data {source.description} is empty")
    ids = tokenize_text(tokenizer, source.text)[skip_tokens:]
    description = f"{source.description} after its first {skip_tokens} tokens" if skip_tokens else source.description
    return _shuffled_windows(ids, seq_len, math.ceil(num_tokens / seq_len), seed, description)


def _start_ids(tokenizer, count: int, generator: torch.Generator) -> torch.Tensor:
    """[BOS, random ordinary token] per sequence: LLM-QAT's data-free start, so samples are diverse."""
    special = set(tokenizer.all_special_ids)
    ordinary = torch.tensor([i for i in range(len(tokenizer)) if i not in special])
    first = ordinary[torch.randint(0, ordinary.numel(), (count,), generator=generator)]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        return first[:, None]
    return torch.stack([torch.full((count,), start), first], dim=1)


@torch.no_grad()
def self_generated_windows(
    teacher,
    tokenizer,
    *,
    num_tokens: int,
    seq_len: int,
    seed: int = 0,
    batch_size: int = 16,
    top_p: float = 0.95,
    temperature: float = 1.0,
    device=None,
    progress: bool = True,
) -> TokenWindows:
    """Text sampled from the teacher (seeded), packed into windows of `seq_len` tokens.

    Each sample starts from BOS plus one random token and runs to EOS or `seq_len` tokens; samples
    are concatenated like pre-training documents. Costs generation time, needs no dataset.
    """
    if seq_len < 4:
        raise ParameterError("seq_len", f"{seq_len} is too short for self-generated data; use at least 4")
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    needed_windows = math.ceil(num_tokens / seq_len)
    stream: list[int] = []
    was_training = teacher.training
    teacher.eval()
    bar = tqdm(total=needed_windows * seq_len, desc="self-generate recovery data", disable=not progress, leave=False, unit="tok")
    try:
        while len(stream) < needed_windows * seq_len:
            starts = _start_ids(tokenizer, batch_size, generator).to(device)
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            output = teacher.generate(
                input_ids=starts,
                attention_mask=torch.ones_like(starts),
                do_sample=True,
                top_p=top_p,
                top_k=0,
                temperature=temperature,
                max_new_tokens=seq_len - starts.shape[1],
                pad_token_id=pad,
                eos_token_id=eos,
            )
            before = len(stream)
            for row in output.cpu().tolist():
                if eos is not None and eos in row[starts.shape[1] :]:
                    row = row[: row.index(eos, starts.shape[1]) + 1]
                stream.extend(row)
            bar.update(len(stream) - before)
    finally:
        bar.close()
        teacher.train(was_training)
    ids = torch.tensor(stream[: needed_windows * seq_len], dtype=torch.long)
    return TokenWindows(ids.view(needed_windows, seq_len), f"self-generated (seed {seed}, top_p {top_p})", ids.numel())
