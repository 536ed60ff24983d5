"""Prompt log-probabilities and greedy tokens of one model directory in vLLM, run by tests/test_export_vllm.py
in vLLM's own environment (the one `make vllm` builds: vLLM pins another torch and transformers).

argv: MODEL_DIR PROMPTS_JSON; prints, after RESULT, one JSON object: {"logprobs": [[...] per prompt], "greedy": [[...] per prompt]}.
The log-probability of prompt token t is the model's for t given the tokens before it (None for the first)."""

import json
import os
import sys

RESULT = "prunekit-vllm-result "
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def main(model_dir: str, prompts_file: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = json.load(open(prompts_file))
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        skip_tokenizer_init=True,
        trust_remote_code=True,
        max_model_len=max(len(p) for p in prompts) + 16,
        seed=0,
    )
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    scored = llm.generate(inputs, SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0), use_tqdm=False)
    logprobs = []
    for prompt, output in zip(prompts, scored):
        entries = output.prompt_logprobs
        logprobs.append([None] + [entries[i][token].logprob for i, token in enumerate(prompt) if i > 0])
    greedy = llm.generate(inputs, SamplingParams(max_tokens=8, temperature=0.0), use_tqdm=False)
    result = {"logprobs": logprobs, "greedy": [list(o.outputs[0].token_ids) for o in greedy]}
    print(RESULT + json.dumps(result), flush=True)  # vLLM logs to stdout too: the result is the line with this prefix


if __name__ == "__main__":
    main(*sys.argv[1:3])
