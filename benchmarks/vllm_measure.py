"""One model served by vLLM's CPU build, in vLLM's own environment (make vllm: vLLM pins another torch and
transformers). Run by benchmarks/vllm_serving.py and by tests/test_export_vllm.py.

argv: MODEL_DIR PROMPTS_JSON [DECODE_TOKENS REPEATS]. Prints, after RESULT, one JSON object:
- logprobs: for each prompt, the log-probability of each token given the ones before it (None for the first);
- greedy: for each prompt, its 8 greedy tokens;
- decode_tokens_per_second: with REPEATS > 0, the median speed of greedy generation of DECODE_TOKENS tokens from
  the first prompt's first 16 tokens, after one warm-up.
Progress bars are off: vLLM divides by its bar's elapsed time, which is zero where tqdm is disabled."""

import json
import os
import statistics
import sys
import time

RESULT = "prunekit-vllm-result "
GREEDY_TOKENS = 8
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def main(model_dir: str, prompts_file: str, decode_tokens: str = "0", repeats: str = "0") -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    prompts = json.load(open(prompts_file))
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        skip_tokenizer_init=True,
        trust_remote_code=True,
        max_model_len=max(len(p) for p in prompts) + max(int(decode_tokens), GREEDY_TOKENS) + 8,
        seed=0,
    )
    inputs = [TokensPrompt(prompt_token_ids=p) for p in prompts]
    scored = llm.generate(inputs, SamplingParams(max_tokens=1, prompt_logprobs=1, temperature=0.0), use_tqdm=False)
    logprobs = [[None] + [out.prompt_logprobs[i][t].logprob for i, t in enumerate(p) if i > 0] for p, out in zip(prompts, scored)]
    greedy = llm.generate(inputs, SamplingParams(max_tokens=GREEDY_TOKENS, temperature=0.0), use_tqdm=False)
    result = {"logprobs": logprobs, "greedy": [list(o.outputs[0].token_ids) for o in greedy]}
    if int(repeats) > 0:
        prompt = TokensPrompt(prompt_token_ids=prompts[0][:16])
        params = SamplingParams(max_tokens=int(decode_tokens), ignore_eos=True, temperature=0.0)
        llm.generate([prompt], params, use_tqdm=False)  # warm-up
        speeds = []
        for _ in range(int(repeats)):
            started = time.perf_counter()
            out = llm.generate([prompt], params, use_tqdm=False)
            speeds.append(len(out[0].outputs[0].token_ids) / (time.perf_counter() - started))
        result["decode_tokens_per_second"] = statistics.median(speeds)
    print(RESULT + json.dumps(result), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
