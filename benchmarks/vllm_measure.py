"""One model in vLLM's CPU build, run by benchmarks/vllm_serving.py in vLLM's own environment (make vllm).

argv: MODEL_DIR WINDOWS_JSON DECODE_TOKENS REPEATS. Prints, after RESULT, one JSON object: the summed negative
log-likelihood and count of every predicted prompt token of each window (for perplexity), and the decode
tokens/s of greedy generation from a short prompt (the median of REPEATS, after one warm-up)."""

import json
import os
import statistics
import sys
import time

RESULT = "prunekit-vllm-result "
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")


def main(model_dir: str, windows_file: str, decode_tokens: str, repeats: str) -> None:
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    windows = json.load(open(windows_file))
    llm = LLM(
        model=model_dir,
        dtype="float32",
        enforce_eager=True,
        skip_tokenizer_init=True,
        trust_remote_code=True,
        max_model_len=max(len(w) for w in windows) + int(decode_tokens) + 8,
        seed=0,
    )
    prompts = [TokensPrompt(prompt_token_ids=w) for w in windows]
    scored = llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=1), use_tqdm=False)
    nll = []
    for window, output in zip(windows, scored):
        nll.append([-sum(output.prompt_logprobs[i][t].logprob for i, t in enumerate(window) if i > 0), len(window) - 1])
    prompt = TokensPrompt(prompt_token_ids=windows[0][:16])
    params = SamplingParams(max_tokens=int(decode_tokens), ignore_eos=True, temperature=0.0)
    llm.generate([prompt], params, use_tqdm=False)  # warm-up
    speeds = []
    for _ in range(int(repeats)):
        started = time.perf_counter()
        out = llm.generate([prompt], params, use_tqdm=False)
        speeds.append(len(out[0].outputs[0].token_ids) / (time.perf_counter() - started))
    print(RESULT + json.dumps({"window_nll": nll, "decode_tokens_per_second": statistics.median(speeds)}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
