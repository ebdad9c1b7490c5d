"""A tiny random-weight chat model in the Hugging Face layout, built offline in a second.

    python scripts/tiny_llm.py DIRECTORY [--plain] [--random]

:func:`build_tiny_chat_model` writes a Qwen2-shaped causal LM (hidden size 64, 2 layers,
``model.safetensors``), a byte-level BPE tokenizer trained on a few sentences, and a compact
Qwen2/Hermes-style chat template with tools. Both ``transformers`` and ``mlx_lm`` load the
directory by path, so the engine tests and ``scripts/bench_local_llm.py`` drive the real loading
and generation code of both libraries without downloading anything.

The weights are random, with one exception that makes answers predictable: by default the
output layer is wired so that greedy decoding answers every prompt with :data:`REPLY` and then
ends its turn. With ``reply=None`` (``--random``) answers are random tokens that run to the
token limit, which is what a throughput benchmark wants.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

#: The chat's control tokens, as Qwen2 names them.
END_OF_TEXT = "<|endoftext|>"
TURN_START = "<|im_start|>"
TURN_END = "<|im_end|>"
SPECIAL_TOKENS = (END_OF_TEXT, TURN_START, TURN_END)
#: Ordinary (non-special) added tokens: decoded as text, so tool-call markup survives decoding.
TOOL_CALL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

#: System turn (instructions, then the tools' JSON schemas), user and assistant turns with their
#: tool calls, and consecutive tool results gathered into one user turn.
TOOLS_TEMPLATE = (
    "{%- if messages and messages[0].role == 'system' %}"
    "{%- set system = messages[0].content %}{%- set turns = messages[1:] %}"
    "{%- else %}{%- set system = '' %}{%- set turns = messages %}{%- endif %}"
    "{%- if system or tools %}"
    "{{- '<|im_start|>system\\n' + system }}"
    "{%- if tools %}"
    "{{- '\\n\\nYou can call these functions:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' + tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\nTo call one, write '"
    ' + \'<tool_call>{"name": <name>, "arguments": <object>}</tool_call>.\' }}'
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in turns %}"
    "{%- if message.role == 'tool' %}"
    "{%- if loop.first or turns[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or turns[loop.index0 + 1].role != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + (message.content or '') }}"
    "{%- for call in message.tool_calls or [] %}"
    "{{- '\\n<tool_call>\\n{\"name\": ' + call.function.name | tojson"
    " + ', \"arguments\": ' + call.function.arguments | tojson + '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: The same turns without any notion of tools (as many small chat models have).
PLAIN_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: What the wired model answers to everything (its tokens must all differ).
REPLY = "Hello from a tiny test model."

CORPUS = (
    # often enough that BPE merges each of its words into one token
    *[REPLY] * 8,
    "The capital city of France is Paris, and the weather there is mild in spring.",
    "What is the weather like in Berlin today? It is sunny with a light breeze.",
    "Please set a timer for five minutes, then tell me a short story about a dragon.",
    "A voice assistant answers in one short sentence, politely and clearly.",
    'Call {"name": "get_weather", "arguments": {"city": "Paris"}} to check the sky.',
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 21 42 100; punctuation: . , ; : ! ? ' \" ( ) [ ] { }",
    "Über café naïve: accents and emoji such as ☀ and 🙂 are bytes to a byte-level tokenizer.",
)


def build_tiny_chat_model(
    directory: str | Path,
    *,
    template: str = TOOLS_TEMPLATE,
    reply: str | None = REPLY,
    vocab_size: int = 384,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write the tokenizer and a random-weight Qwen2 causal LM to ``directory``; return it.

    With ``reply``, the token embeddings are drawn large beside the (randomly initialised)
    attention and MLP outputs, so the last hidden state mostly names the current token; the
    output row of each token of ``reply``, and of the end-of-turn token after it, then points at
    the embedding of the token before it (the first at the newline that ends the generation
    prompt). Greedy decoding follows that chain from any prompt, and sampling returns to it
    within a few tokens. Without ``reply`` the end-of-turn token's output row is zeroed, so
    greedy decoding never picks it and every answer runs to its token limit."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        AddedToken,
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=TURN_END,
        pad_token=END_OF_TEXT,
        additional_special_tokens=[TURN_START],
        chat_template=template,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_CALL_TOKENS])
    tokenizer.save_pretrained(directory)

    torch.manual_seed(seed)
    eos = tokenizer.convert_tokens_to_ids(TURN_END)
    pad = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    model = Qwen2ForCausalLM(config).eval()
    embeddings, outputs = model.model.embed_tokens.weight, model.lm_head.weight
    with torch.no_grad():
        if reply is None:
            outputs[eos].zero_()
        else:
            chain = [tokenizer.convert_tokens_to_ids("\u010a")]  # the byte-level newline
            chain += [*tokenizer.encode(reply, add_special_tokens=False), eos]
            if len(set(chain)) != len(chain):
                raise ValueError(f"the tokens of {reply!r} must all differ: {chain}")
            embeddings.normal_(0.0, 1.0)
            for previous, token in itertools.pairwise(chain):
                outputs[token] = embeddings[previous] / embeddings[previous].norm()
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, do_sample=True, temperature=0.7, top_p=0.9
    )
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--plain", action="store_true", help="a chat template without tools")
    parser.add_argument("--random", action="store_true", help="random answers to the limit")
    args = parser.parse_args()
    path = build_tiny_chat_model(
        args.directory,
        template=PLAIN_TEMPLATE if args.plain else TOOLS_TEMPLATE,
        reply=None if args.random else REPLY,
    )
    print(path)


if __name__ == "__main__":
    main()
